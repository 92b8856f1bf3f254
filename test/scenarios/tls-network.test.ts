import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { parse, stringify } from "yaml";
import { loadConfig, validateConfig } from "../../src/common/config.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { freePort } from "../../src/common/loopback.ts";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { configureClientTls } from "../../src/common/tls-client.ts";
import { autoTlsPaths } from "../../src/common/tls-config.ts";
import { ensureAutoTls } from "../../src/common/tls-issuer.ts";
import { StateService } from "../../src/gen/lockstep/ledger/v1/state_service_pb.ts";
import { runLockstep, writeTestConfig } from "../support/cli.ts";
import { iouArgs } from "../support/ledger-client.ts";
import { type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";
import { waitFor } from "../support/wait.ts";

// TLS on every port, through the CLI: `tls: auto` issues a network CA and the nodes' certificates,
// nodes talk to each other with mutual TLS (client-auth: require), the CLI and plain HTTP/1.1 clients
// work over https, a certificate of another CA and cleartext are refused; a node bound to an address
// other machines reach does not start without TLS unless the config says `tls: off`.

const curl = promisify(execFile);
const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** Another network's CA and client certificate: what a stranger would present. */
async function foreignClient(): Promise<{ cert: string; key: string; ca: string }> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-foreign-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const config = validateConfig({
    "data-dir": join(dir, "data"),
    tls: "auto",
    synchronizer: { id: "x", sequencer: { name: "participant1", port: 1 }, mediator: { name: "m", port: 2 } },
  });
  await ensureAutoTls(config);
  const paths = autoTlsPaths(config["data-dir"]);
  return { ...paths.node("participant1"), ca: paths.ca.cert };
}

test("a network with tls: auto and client-auth require: a transaction commits, the CLI and curl work, strangers are refused", async () => {
  const network: LedgerNetwork = await startLedgerNetwork({
    configure: (config) => {
      (config as Record<string, unknown>).tls = { auto: true, "client-auth": "require" };
    },
  });
  cleanups.push(() => network.down());
  const { cfg, dataDir } = network;
  const paths = autoTlsPaths(dataDir);
  const [p1Port, p2Port] = network.participantPorts as [number, number];

  // Every node's certificate and the CLI's were issued under the data dir, owner-only.
  const init = await runLockstep(["tls", "init", "--json", ...cfg]);
  assert.equal(init.code, 0, init.stderr);
  const certificates = init.json<{ certificates: { name: string; issued: boolean; key: string }[] }>()
    .certificates;
  assert.deepEqual(certificates.map((c) => c.name).sort(), [
    "ca",
    "client",
    "mediator1",
    "participant1",
    "participant2",
    "sequencer1",
  ]);
  assert.ok(
    certificates.every((c) => !c.issued),
    "the nodes issued them at their start; init keeps them",
  );
  for (const c of certificates) assert.equal(statSync(c.key).mode & 0o777, 0o600, c.key);

  // The CLI over https with its client certificate: status and ledger commands.
  const status = await runLockstep(["status", "--json", ...cfg]);
  assert.equal(status.code, 0, status.stderr);
  const nodes = status.json<{ nodes: { name: string; running: boolean; role: string }[] }>().nodes;
  assert.ok(
    nodes.every((n) => n.running && n.role === "active"),
    JSON.stringify(nodes),
  );

  const ledger = (...args: string[]) => runLockstep(["ledger", ...args, "--json", ...cfg]);
  const alice = (await ledger("allocate-party", "alice", "--participant", "participant1")).json<{
    party: string;
  }>().party;
  const bob = (await ledger("allocate-party", "bob", "--participant", "participant2")).json<{
    party: string;
  }>().party;
  assert.ok(alice && bob);
  const created = await ledger(
    "submit",
    "--participant",
    "participant1",
    "--act-as",
    alice,
    "--command-id",
    "tls-1",
    "--create",
    "Iou",
    "--args",
    JSON.stringify(iouArgs(alice, bob)),
  );
  assert.equal(created.code, 0, created.stdout + created.stderr);
  // Across the synchronizer (participant1 → sequencer → mediator, participant2), all over mutual TLS.
  const [contractId] = created.json<{ createdContractIds: string[] }>().createdContractIds;
  const bobsAcs = await waitFor("the Iou on participant2", async () => {
    const acs = (await ledger("acs", "--participant", "participant2", "--party", bob)).json<{
      contracts: { contractId: string }[];
    }>();
    return acs.contracts.some((c) => c.contractId === contractId) ? acs : undefined;
  });
  assert.equal(bobsAcs.contracts.length, 1);

  // A Ledger API client over gRPC/Connect (HTTP/2) with the CLI's certificate, as an application would.
  configureClientTls((await loadConfig({ path: network.net.configPath })).config);
  const end = await createNodeClient(StateService, `https://127.0.0.1:${p2Port}`).getLedgerEnd({});
  assert.ok(end.offset > 0n);

  // curl: Connect JSON over HTTP/1.1 with the network's CA and the client certificate.
  const mine = ["--cacert", paths.ca.cert, "--cert", paths.client.cert, "--key", paths.client.key];
  const byCurl = (extra: string[], scheme = "https") =>
    curl("curl", [
      "-sS",
      "--http1.1",
      "--max-time",
      "10",
      ...extra,
      "-H",
      "content-type: application/json",
      "-d",
      "{}",
      `${scheme}://127.0.0.1:${p1Port}/lockstep.ledger.v1.StateService/GetLedgerEnd`,
    ]);
  const viaCurl = JSON.parse((await byCurl(mine)).stdout) as { offset?: string; incarnation: string };
  assert.ok(Number(viaCurl.offset) > 0, JSON.stringify(viaCurl));

  // A replica on its own port serves TLS with the node's certificate and takes over when the main
  // process stops; the CLI reaches it over https.
  const replicaPort = await freePort();
  const replica = await runLockstep([
    ...[
      "node",
      "start",
      "participant2",
      "--replica",
      "r1",
      "--port",
      String(replicaPort),
      "--detach",
      "--json",
    ],
    ...cfg,
  ]);
  assert.equal(replica.code, 0, replica.stdout + replica.stderr);
  assert.equal(replica.json<{ role: string }>().role, "passive");
  assert.equal((await runLockstep(["node", "stop", "participant2", ...cfg])).code, 0);
  await waitFor("the replica active", async () => {
    const { stdout } = await curl("curl", ["-sS", ...mine, `https://127.0.0.1:${replicaPort}/health`]);
    return (JSON.parse(stdout) as { status: string }).status === "active" ? true : undefined;
  });

  // The CLI's certificate is an admin client certificate: an Admin API call needs no token with it;
  // a node's certificate is not one.
  const adminCall = (cert: { cert: string; key: string }) =>
    curl("curl", [
      ...[
        "-sS",
        "--http1.1",
        "--max-time",
        "10",
        "--cacert",
        paths.ca.cert,
        "--cert",
        cert.cert,
        "--key",
        cert.key,
      ],
      ...["-H", "content-type: application/json", "-d", "{}", "-w", "\n%{http_code}"],
      `https://127.0.0.1:${p1Port}/lockstep.admin.v1.AdminService/GetStatus`,
    ]).then((r) => r.stdout.split("\n"));
  const [asAdmin, adminStatus] = await adminCall(paths.client);
  assert.equal(adminStatus, "200", asAdmin);
  assert.equal(JSON.parse(asAdmin as string).name, "participant1");
  const [asNode, nodeStatus] = await adminCall(paths.node("participant2"));
  assert.equal(nodeStatus, "401", asNode);
  assert.match(asNode as string, /ADMIN_UNAUTHENTICATED/);

  // Refused: a certificate of another CA (at the handshake), no certificate, cleartext.
  const stranger = await foreignClient();
  const refusal = (extra: string[], scheme?: string) =>
    byCurl(extra, scheme).then(
      (r) => `accepted: ${r.stdout}`,
      (err: { stderr: string }) => err.stderr,
    );
  assert.match(
    await refusal(["--cacert", paths.ca.cert, "--cert", stranger.cert, "--key", stranger.key]),
    // TLS 1.3: the server checks the client's certificate after the client's last handshake message,
    // so curl sees an alert, the connection reset or closed before any reply.
    /alert|certificate|reset|Empty reply/i,
  );
  assert.match(await refusal(["--cacert", paths.ca.cert]), /certificate required/);
  assert.match(await refusal([], "http"), /Empty reply|reset|recv failure/i);
  // The CLI says what failed: with a stranger's client certificate, or trusting another CA.
  const variant = (file: string, tls: unknown) => {
    const config = parse(readFileSync(network.net.configPath, "utf8")) as Record<string, unknown>;
    config.tls = tls;
    writeFileSync(join(network.net.dir, file), stringify(config));
    return ["--config", join(network.net.dir, file)];
  };
  for (const tls of [
    { auto: true, "client-auth": "require", client: { cert: stranger.cert, key: stranger.key } },
    { auto: true, "client-auth": "require", ca: stranger.ca },
  ]) {
    const run = await runLockstep([
      "ledger",
      "end",
      "--participant",
      "participant1",
      "--json",
      ...variant("other.yaml", tls),
    ]);
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.equal(run.json<{ error: { code: string } }>().error.code, "TLS_HANDSHAKE_FAILED", run.stdout);
  }
  // And a server the client does not trust: curl without the network's CA.
  assert.match(await refusal(["--cert", paths.client.cert, "--key", paths.client.key]), /certificate/i);
});

/** A non-loopback address of this machine, if it has one. */
/**
 * This machine's own non-loopback address, if it has one. Not on a test site's veth (test/support/sites.ts
 * names them `lsr…`): another test file running beside this one creates and deletes those.
 */
function outsideAddress(): string | undefined {
  return Object.entries(networkInterfaces())
    .filter(([name]) => !name.startsWith("lsr") && !name.startsWith("veth"))
    .flatMap(([, addresses]) => addresses ?? [])
    .find((a) => !a.internal && a.family === "IPv4")?.address;
}

test("a node bound to every address refuses to start without TLS, and starts with tls: off or tls: auto", async () => {
  const net = await writeTestConfig(1);
  cleanups.push(async () => {
    await runLockstep(["down", "--config", net.configPath]);
    rmSync(net.dir, { recursive: true, force: true });
  });
  const cfg = ["--config", net.configPath];
  const edit = (change: (config: ConfigInput & { tls?: unknown }) => void) => {
    const config = parse(readFileSync(net.configPath, "utf8")) as ConfigInput & { tls?: unknown };
    change(config);
    writeFileSync(net.configPath, stringify(config));
  };
  edit((config) => {
    config.synchronizer.sequencer.host = "0.0.0.0";
  });

  const refused = await runLockstep(["node", "start", "sequencer1", "--json", ...cfg]);
  assert.equal(refused.code, 2, refused.stdout + refused.stderr);
  const error = refused.json<{ error: { code: string; message: string; remedy: string } }>().error;
  assert.equal(error.code, "TLS_REQUIRED");
  assert.match(error.message, /sequencer1 binds 0\.0\.0\.0/);
  assert.match(error.remedy, /tls: auto/);
  assert.match(error.remedy, /tls: off/);

  const health = async (url: string, extra: string[] = []) =>
    JSON.parse((await curl("curl", ["-sS", "--max-time", "5", ...extra, `${url}/health`])).stdout) as {
      status: string;
    };
  const port = net.ports.sequencer;
  const outside = outsideAddress();

  // tls: off on the node: cleartext on purpose, reachable on every address.
  edit((config) => {
    (config.synchronizer.sequencer as Record<string, unknown>).tls = "off";
  });
  const plain = await runLockstep(["node", "start", "sequencer1", "--detach", "--json", ...cfg]);
  assert.equal(plain.code, 0, plain.stdout + plain.stderr);
  assert.equal((await health(`http://127.0.0.1:${port}`)).status, "active");
  if (outside) assert.equal((await health(`http://${outside}:${port}`)).status, "active");
  assert.equal((await runLockstep(["node", "stop", "sequencer1", ...cfg])).code, 0);

  // tls: auto: the certificate names this machine's addresses, so a client verifies it at each.
  edit((config) => {
    delete (config.synchronizer.sequencer as Record<string, unknown>).tls;
    config.tls = "auto";
  });
  const secure = await runLockstep(["node", "start", "sequencer1", "--detach", "--json", ...cfg]);
  assert.equal(secure.code, 0, secure.stdout + secure.stderr);
  const ca = ["--cacert", autoTlsPaths(join(net.dir, "data")).ca.cert];
  assert.equal((await health(`https://127.0.0.1:${port}`, ca)).status, "active");
  assert.equal((await health(`https://localhost:${port}`, ca)).status, "active");
  if (outside) assert.equal((await health(`https://${outside}:${port}`, ca)).status, "active");
  const status = await runLockstep(["status", "--json", ...cfg]);
  const sequencer = status
    .json<{ nodes: { name: string; running: boolean }[] }>()
    .nodes.find((n) => n.name === "sequencer1");
  assert.equal(sequencer?.running, true);
});
