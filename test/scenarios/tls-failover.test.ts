import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { loadConfig, validateConfig } from "../../src/common/config.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { freePort } from "../../src/common/loopback.ts";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { configureClientTls } from "../../src/common/tls-client.ts";
import { autoTlsPaths } from "../../src/common/tls-config.ts";
import { ensureAutoTls } from "../../src/common/tls-issuer.ts";
import { CommandService } from "../../src/gen/lockstep/ledger/v1/command_service_pb.ts";
import { adminClient } from "../../src/node/clients.ts";
import { type CliResult, runLockstep } from "../support/cli.ts";
import {
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { backupCreate, nodeLog, restore } from "../support/restore-network.ts";

// Fail-over and fencing with TLS on every port, mutual TLS between nodes (client-auth: require) and
// the Admin API behind the admin token (docs/security.md, docs/operations.md): a switch-over to a
// passive replica and a restored copy taking over both work over TLS, and the old writer is fenced
// and refused. Then the Admin API's refusals through the CLI: backup create, restore plan and
// restore apply with a wrong or no admin token fail with ADMIN_UNAUTHENTICATED and change nothing;
// an admin client certificate of another CA is refused at the handshake.

const cleanups: (() => Promise<unknown> | unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
});

let n: LedgerNetwork;
let alice: string;
let set: string;
const local = "127.0.0.1";

/** The CLI with another config beside the network's: `edit` changes a copy of its YAML. */
function variant(file: string, edit: (config: Record<string, unknown>) => void): string[] {
  const config = parse(readFileSync(n.net.configPath, "utf8")) as Record<string, unknown>;
  edit(config);
  const path = join(n.net.dir, file);
  writeFileSync(path, stringify(config));
  return ["--config", path];
}

function errorCode(r: CliResult): string | undefined {
  try {
    return r.json<{ error?: { code?: string } }>().error?.code;
  } catch {
    return undefined;
  }
}

/** A command committed at the participant process on `port` (https, this process's client TLS). */
async function commit(port: number, commandId: string): Promise<void> {
  const commands = createCommands(port);
  await waitFor(
    `${commandId} to commit on port ${port}`,
    async () => {
      const r = await commands.submitAndWait(
        { commands: createIouCommand(commandId, alice, alice, { amount: "1.00" }) },
        { timeoutMs: 20_000 },
      );
      return r.offset > 0n ? true : undefined;
    },
    90_000,
    500,
  );
}

function createCommands(port: number) {
  return createNodeClient(CommandService, `https://${local}:${port}`);
}

test("setup: a network with tls: auto, client-auth require and the admin token", async () => {
  n = await startLedgerNetwork({
    participants: 1,
    tolerance: "10s",
    configure: (config) => {
      (config as Record<string, unknown>).tls = { auto: true, "client-auth": "require" };
    },
  });
  cleanups.push(() => n.down());
  // This process's clients: the network's CA and the CLI's (admin) client certificate.
  configureClientTls((await loadConfig({ path: n.net.configPath })).config);
  const allocated = await runLockstep([
    ...["ledger", "allocate-party", "alice", "--participant", "participant1", "--json"],
    ...n.cfg,
  ]);
  assert.equal(allocated.code, 0, allocated.stdout + allocated.stderr);
  alice = allocated.json<{ party: string }>().party;
  await commit(n.participantPorts[0] as number, "before-switch-over");
});

test("switch-over over TLS: the replica takes over, fences the old process's activation, and commits", async (t) => {
  const mainPort = n.participantPorts[0] as number;
  const replicaPort = await freePort();
  const started = await runLockstep([
    ...["node", "start", "participant1", "--replica", "r2", "--port", String(replicaPort), "--detach"],
    ...["--json", ...n.cfg],
  ]);
  assert.equal(started.code, 0, started.stdout + started.stderr);
  assert.equal(started.json<{ role: string }>().role, "passive");

  const switched = await runLockstep(["node", "switch-over", "participant1", "--json", ...n.cfg]);
  assert.equal(switched.code, 0, switched.stdout + switched.stderr);
  const result = switched.json<{ from: { replica: string | null }; to: { replica: string | null } }>();
  assert.deepEqual([result.from.replica, result.to.replica], [null, "r2"]);

  const replica = adminClient(replicaPort, local, { tls: true });
  const main = adminClient(mainPort, local, { tls: true });
  assert.equal((await main.getStatus({})).role, "passive");
  // The replica's activation told the previous one (the main process, at another port) over mutual
  // TLS with participant1's own certificate; on one database the lock decides: "same-database".
  const fencing = await waitFor("the replica's fence notice answered", async () => {
    const { fencingJson } = await replica.getStatus({});
    const report = fencingJson
      ? (JSON.parse(fencingJson) as { state: string; lastError?: string })
      : undefined;
    return report && report.state !== "trying" ? report : undefined;
  });
  t.diagnostic(`fencing of the main process: ${JSON.stringify(fencing)}`);
  assert.equal(fencing.state, "same-database");
  await commit(replicaPort, "after-switch-over");

  // The replica goes; the main process takes the lock back and serves again.
  const stopped = await runLockstep(["node", "stop", "participant1", "--replica", "r2", ...n.cfg]);
  assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
  await waitFor("the main process active again", async () =>
    (await main.getStatus({}, { timeoutMs: 2000 })).role === "active" ? true : undefined,
  );
  await commit(mainPort, "after-replica-stopped");
});

test("Admin API refusals through the CLI: no or a wrong admin token, an admin certificate of another CA", async () => {
  const paths = autoTlsPaths(n.dataDir);
  // Without the admin client certificate (a node's certificate of the same CA instead), the admin
  // token is what authenticates the CLI.
  const tlsWithoutAdminCert = { auto: true, "client-auth": "require", client: paths.node("participant1") };
  const tokenOnly = variant("token-only.yaml", (c) => {
    c.tls = tlsWithoutAdminCert;
  });
  const noToken = variant("no-token.yaml", (c) => {
    c.tls = tlsWithoutAdminCert;
    c.admin = { "token-file": join(n.net.dir, "no-such-admin-token") };
  });
  const wrong = { LOCKSTEP_ADMIN_TOKEN: "wrong-wrong-wrong-wrong-wrong" };
  const none = { LOCKSTEP_ADMIN_TOKEN: "" };

  // The right token with that certificate works: the refusals below are the token's.
  const ok = await runLockstep(["sequencer", "status", "--json", ...tokenOnly], { env: none });
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);

  // backup create: refused before a set exists.
  const repository = join(n.net.dir, "backups");
  const setsBefore = listing(repository);
  for (const [cfg, env] of [
    [tokenOnly, wrong],
    [noToken, none],
  ] as const) {
    const r = await runLockstep(["backup", "create", "--json", ...cfg], { env, timeoutMs: 180_000 });
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(errorCode(r), "ADMIN_UNAUTHENTICATED", r.stdout + r.stderr);
  }
  assert.deepEqual(listing(repository), setsBefore, "no set was begun");

  // A set taken with the right credentials, for the restores below and the next test.
  set = await backupCreate(n);
  const epochBefore = (await adminClient(n.participantPorts[0] as number, local, { tls: true }).getStatus({}))
    .writerEpoch;

  // restore plan and apply against the running network: refused with the code, nothing changed.
  for (const [cfg, env] of [
    [tokenOnly, wrong],
    [noToken, none],
  ] as const) {
    const plan = await runLockstep(["restore", "plan", set, "--nodes", "participant1", "--json", ...cfg], {
      env,
    });
    assert.notEqual(plan.code, 0, plan.stdout);
    assert.equal(errorCode(plan), "ADMIN_UNAUTHENTICATED", plan.stdout + plan.stderr);
    const apply = await runLockstep(
      ["restore", "apply", set, "--nodes", "participant1", "--replace", "--yes", "--json", ...cfg],
      { env, timeoutMs: 180_000 },
    );
    assert.notEqual(apply.code, 0, apply.stdout);
    assert.equal(errorCode(apply), "ADMIN_UNAUTHENTICATED", apply.stdout + apply.stderr);
  }
  const after = await adminClient(n.participantPorts[0] as number, local, { tls: true }).getStatus({});
  assert.deepEqual(
    [after.role, after.writerEpoch],
    ["active", epochBefore],
    "participant1 kept running as it was",
  );
  await commit(n.participantPorts[0] as number, "after-refused-restores");

  // An admin client certificate of another CA: refused at the handshake, whatever it names.
  const stranger = await foreignAdminCertificate();
  const foreign = variant("foreign-admin.yaml", (c) => {
    c.tls = { auto: true, "client-auth": "require", client: stranger };
  });
  const setsNow = listing(repository);
  for (const args of [
    ["sequencer", "status"],
    // Not "the sequencer does not answer", which would skip its checks and holds.
    ["restore", "plan", set, "--nodes", "participant1"],
    ["backup", "create"],
  ]) {
    const r = await runLockstep([...args, "--json", ...foreign], { timeoutMs: 180_000 });
    assert.notEqual(r.code, 0, r.stdout);
    assert.equal(errorCode(r), "TLS_HANDSHAKE_FAILED", r.stdout + r.stderr);
  }
  assert.deepEqual(listing(repository), setsNow, "no set was begun");
});

test("a restored copy of participant1 takes over over TLS: the old writer is fenced and refused", async (t) => {
  const mainPort = n.participantPorts[0] as number;
  const copyPort = await freePort();
  const paths = autoTlsPaths(n.dataDir);
  // The copy runs from its own data dir (another machine's, say) with the network's certificates,
  // CA and admin token: what an operator moving participant1 would give it.
  const copyCfg = variant("copy.yaml", (c) => {
    const config = c as {
      "data-dir": string;
      tls?: unknown;
      admin?: unknown;
      synchronizer: Record<string, Record<string, unknown>>;
      participants: Record<string, unknown>[];
    };
    config["data-dir"] = "data-copy";
    config.tls = { ca: paths.ca.cert, "client-auth": "require", client: paths.client };
    config.admin = { "token-file": join(n.dataDir, "admin-token") };
    for (const node of [config.synchronizer.sequencer, config.synchronizer.mediator, config.participants[0]])
      if (node) node.tls = paths.node(String(node.name));
    (config.participants[0] as { port: number }).port = copyPort;
  });
  const copy: LedgerNetwork = { ...n, cfg: copyCfg, dataDir: join(n.net.dir, "data-copy") };
  cleanups.push(() => runLockstep(["down", ...copyCfg]));

  const applied = await restore(copy, "apply", set, ["--nodes", "participant1"]);
  assert.equal(applied.code, 0, applied.stdout + applied.stderr);
  const started = await runLockstep(["node", "start", "participant1", "--detach", "--json", ...copyCfg], {
    timeoutMs: 120_000,
  });
  assert.equal(started.code, 0, started.stdout + started.stderr);

  const old = adminClient(mainPort, local, { tls: true });
  const moved = adminClient(copyPort, local, { tls: true });
  // The old writer: fenced by the copy's notice over mutual TLS, or refused by the sequencer.
  const failed = await waitFor(
    "the old process of participant1 to stop writing",
    async () => {
      const s = await old.getStatus({}, { timeoutMs: 2000 });
      return s.role === "failed" ? s : undefined;
    },
    60_000,
    500,
  ).catch((error: unknown) => {
    throw new Error(`${error}\nold:\n${nodeLog(n, "participant1")}\ncopy:\n${nodeLog(copy, "participant1")}`);
  });
  assert.equal(failed.lastError?.code, "STALE_WRITER_EPOCH", failed.lastError?.message);
  const fencing = JSON.parse((await moved.getStatus({})).fencingJson || "{}") as { state?: string };
  t.diagnostic(`the copy's fencing of the old activation: ${JSON.stringify(fencing)}`);
  assert.equal(fencing.state, "fenced");

  const refused = await createCommands(mainPort)
    .submitAndWait(
      { commands: createIouCommand("from-old-writer", alice, alice, { amount: "666.00" }) },
      { timeoutMs: 20_000 },
    )
    .then(
      () => "committed",
      (error: unknown) => fromConnectError(error)?.code ?? String(error),
    );
  assert.equal(refused, "STALE_WRITER_EPOCH");
  await commit(copyPort, "on-the-copy");
});

/** The set folders in the repository (none while it does not exist). */
function listing(repository: string): string[] {
  try {
    return readdirSync(repository).sort();
  } catch {
    return [];
  }
}

/** Another network's admin client certificate (it names an admin; its CA is not this network's). */
async function foreignAdminCertificate(): Promise<{ cert: string; key: string }> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-foreign-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const config = validateConfig({
    "data-dir": join(dir, "data"),
    tls: "auto",
    synchronizer: { id: "x", sequencer: { name: "s", port: 1 }, mediator: { name: "m", port: 2 } },
  });
  await ensureAutoTls(config);
  return autoTlsPaths(config["data-dir"]).client;
}
