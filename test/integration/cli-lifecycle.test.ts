import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { freePort } from "../../src/common/loopback.ts";
import type { TestNetworkConfig } from "../support/cli.ts";
import { runLockstep, writeTestConfig } from "../support/cli.ts";
import { waitFor } from "../support/wait.ts";

interface StatusJson {
  nodes: { name: string; kind: string; running: boolean; role: string | null; writerEpoch: string | null }[];
}

let net: TestNetworkConfig;
const cfg = () => ["--config", net.configPath];

before(async () => {
  net = await writeTestConfig();
});

after(async () => {
  await runLockstep(["down", ...cfg()]);
  rmSync(net.dir, { recursive: true, force: true });
});

async function health(port: number): Promise<{ status: number; body: { status: string } }> {
  const r = await fetch(`http://127.0.0.1:${port}/health`);
  return { status: r.status, body: (await r.json()) as { status: string } };
}

test("up --detach, status, replica fail-over, down", async () => {
  const up = await runLockstep(["up", "--detach", "--json", ...cfg()]);
  assert.equal(up.code, 0, up.stderr);
  assert.deepEqual(
    up.json<{ nodes: { name: string }[] }>().nodes.map((n) => n.name),
    ["sequencer1", "mediator1", "participant1", "participant2"],
  );
  assert.ok(existsSync(join(net.dir, "data", "run", "sequencer1.pid")));
  assert.ok(existsSync(join(net.dir, "data", "logs", "participant1.log")));

  const status = await runLockstep(["status", "--json", ...cfg()]);
  assert.equal(status.code, 0, status.stderr);
  const nodes = status.json<StatusJson>().nodes;
  assert.equal(nodes.length, 4);
  for (const n of nodes) {
    assert.equal(n.running, true, `${n.name} running`);
    assert.equal(n.role, "active", `${n.name} active`);
    assert.equal(n.writerEpoch, "1");
  }
  assert.equal((await health(net.ports.sequencer)).status, 200);

  // A second process of participant1 on the same database is passive…
  const replicaPort = await freePort();
  const replica = await runLockstep([
    "node",
    "start",
    "participant1",
    "--replica",
    "r2",
    "--port",
    String(replicaPort),
    "--detach",
    "--json",
    ...cfg(),
  ]);
  assert.equal(replica.code, 0, replica.stderr);
  assert.equal(replica.json<{ role: string }>().role, "passive");
  const passive = await health(replicaPort);
  assert.equal(passive.status, 503);
  assert.equal(passive.body.status, "passive");

  // …and takes over within seconds when the active one stops, with a higher writer epoch.
  const stop = await runLockstep(["node", "stop", "participant1", "--json", ...cfg()]);
  assert.equal(stop.code, 0, stop.stderr);
  await waitFor("replica active", async () =>
    (await health(replicaPort)).status === 200 ? true : undefined,
  );

  const down = await runLockstep(["down", "--json", ...cfg()]);
  assert.equal(down.code, 0, down.stderr);
  const stopped = down.json<{ stopped: { name: string }[]; embeddedPostgresStopped: boolean }>();
  assert.deepEqual(stopped.stopped.map((s) => s.name).sort(), [
    "mediator1",
    "participant1",
    "participant2",
    "sequencer1",
  ]);
  assert.equal(stopped.embeddedPostgresStopped, true);

  const after = await runLockstep(["status", "--json", ...cfg()]);
  assert.ok(after.json<StatusJson>().nodes.every((n) => !n.running));
});

test("a port in use fails with PORT_IN_USE and leaves nothing running", async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(net.ports.participants[1], "127.0.0.1", r));
  try {
    const up = await runLockstep(["up", "--detach", "--json", ...cfg()]);
    assert.equal(up.code, 1, up.stdout);
    assert.equal(up.json<{ error: { code: string } }>().error.code, "PORT_IN_USE");
    const status = await runLockstep(["status", "--json", ...cfg()]);
    assert.ok(
      status.json<StatusJson>().nodes.every((n) => !n.running),
      "nothing left running",
    );
  } finally {
    blocker.close();
  }
});

test("unknown node name and bad config exit 2 with the key or name", async () => {
  const unknown = await runLockstep(["node", "start", "nope", "--json", ...cfg()]);
  assert.equal(unknown.code, 2);
  const error = unknown.json<{ error: { code: string; message: string } }>().error;
  assert.equal(error.code, "NODE_UNKNOWN");
  assert.match(error.message, /participant1/);

  const bad = join(net.dir, "bad.yaml");
  writeFileSync(
    bad,
    "synchronizer:\n  id: sync1\n  sequencer: { name: s1, port: notaport }\n  mediator: { name: m1, port: 1 }\n",
  );
  const check = await runLockstep(["config", "check", "--config", bad]);
  assert.equal(check.code, 2);
  assert.match(check.stderr, /synchronizer\.sequencer\.port/);

  const usage = await runLockstep(["node", "start"]);
  assert.equal(usage.code, 2);
});
