import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, test } from "node:test";
import { parse, stringify } from "yaml";
import { loadConfig } from "../../src/common/config.ts";
import { configNodes } from "../../src/common/config-schema.ts";
import { createLogger, silentLogger } from "../../src/common/logging.ts";
import { nodeEndpoint } from "../../src/common/node-endpoint.ts";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { configureClientTls } from "../../src/common/tls-client.ts";
import { AdminService } from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import { type RunningNetwork, startNetwork } from "../../src/node/network.ts";
import { writeTestConfig } from "../support/cli.ts";
import { waitFor } from "../support/wait.ts";

// Several nodes in one process (`lockstep up` in the foreground, the demo) under mutual TLS: each
// node's calls present its own certificate, not the first node's, and the CLI's calls in the same
// process present the admin client certificate. What the sequencer sees is read from its log line
// for each verified TLS connection (NodeServer: "tls client connected", peer = describePeer).

let network: RunningNetwork | undefined;
let dir: string | undefined;
after(async () => {
  await network?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("in one process, the sequencer sees each member node's own certificate and the CLI's admin one", async () => {
  const net = await writeTestConfig(2);
  dir = net.dir;
  const yaml = parse(readFileSync(net.configPath, "utf8")) as Record<string, unknown> & {
    synchronizer: Record<string, unknown>;
  };
  yaml.tls = { auto: true, "client-auth": "require" };
  // Registration is not what this test is about: the sequencer lets every member in.
  yaml.synchronizer.onboarding = "open";
  writeFileSync(net.configPath, stringify(yaml));
  const { config } = await loadConfig({ path: net.configPath });
  // As the CLI does before `up` starts the nodes in its own process (cli-context.ts).
  configureClientTls(config);

  const seen: { peer: string; remote: string }[] = [];
  const sequencerLog = createLogger({
    node: "sequencer1",
    level: "debug",
    destination: {
      write: (line: string) => {
        const entry = JSON.parse(line) as { msg?: string; peer?: string; remote?: string };
        if (entry.msg === "tls client connected")
          seen.push({ peer: String(entry.peer), remote: String(entry.remote) });
      },
    },
  });
  network = await startNetwork({
    config,
    dataDir: config["data-dir"],
    entries: configNodes(config),
    loggerFor: (node) => (node === "sequencer1" ? sequencerLog : silentLogger(node)),
    ownCluster: true,
  });

  // Every member subscribed over mutual TLS (its resubscription check passed at the sequencer).
  for (const runtime of network.runtimes.filter((r) => r.name !== "sequencer1")) {
    await waitFor(`${runtime.name} subscribed`, async () => {
      const status = await runtime.status();
      const position = JSON.parse(status.positionJson || "{}") as { subscriptionCheck?: string };
      return position.subscriptionCheck === "passed" ? true : undefined;
    });
  }
  const peers = () => new Set(seen.map((s) => s.peer));
  // Old code: every connection presented the first node's certificate (node:sequencer1).
  for (const member of ["mediator1", "participant1", "participant2"])
    assert.ok(peers().has(`node:${member}`), `the sequencer saw ${member}: ${[...peers()].join(", ")}`);
  assert.ok(!peers().has("node:sequencer1"), "no call presented the sequencer's own certificate");

  // The CLI's call from this process presents the admin client certificate: the Admin API answers
  // it even with a wrong token (a node's certificate would not do: tls-network.test.ts).
  const sequencerUrl = nodeEndpoint(config.synchronizer.sequencer).url;
  const before = seen.length;
  const status = await createNodeClient(AdminService, sequencerUrl, { httpVersion: "1.1" }).getStatus(
    {},
    { headers: { authorization: "Bearer not-the-admin-token-at-all" } },
  );
  assert.equal(status.name, "sequencer1");
  await waitFor("the CLI's connection logged", () =>
    seen.slice(before).some((s) => s.peer.startsWith("admin:")) ? true : undefined,
  );
});
