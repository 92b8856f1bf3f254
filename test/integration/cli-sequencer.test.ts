import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, test } from "node:test";
import { runLockstep, writeTestConfig } from "../support/cli.ts";

interface SequencerStatusJson {
  head: string | null;
  safePruningTimestamp: string | null;
  pruningLowerBound: string | null;
  members: { member: string; acknowledged: string | null }[];
}

const net = await writeTestConfig(1);
const cfg = ["--config", net.configPath];

after(async () => {
  await runLockstep(["down", ...cfg]);
  rmSync(net.dir, { recursive: true, force: true });
});

test("sequencer status and prune from the CLI: safe point allowed, beyond it refused with exit 3", async () => {
  const up = await runLockstep(["up", "--detach", "--json", ...cfg]);
  assert.equal(up.code, 0, up.stdout + up.stderr);

  // Members acknowledge their clean timestamp every second; wait until all have.
  let status: SequencerStatusJson | undefined;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const r = await runLockstep(["sequencer", "status", "--json", ...cfg]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    status = r.json<SequencerStatusJson>();
    if (status.members.length > 0 && status.safePruningTimestamp !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.ok(status?.safePruningTimestamp, "a safe pruning point once every member acknowledged");
  assert.ok(status.members.some((m) => m.member.startsWith("mediator1::")));

  const beyond = await runLockstep([
    "sequencer",
    "prune",
    "--before",
    (BigInt(status.head ?? "0") + 1n).toString(),
    "--json",
    ...cfg,
  ]);
  assert.equal(beyond.code, 3, beyond.stdout);
  assert.equal(beyond.json<{ error: { code: string } }>().error.code, "UNSAFE_TO_PRUNE");

  const safe = await runLockstep(["sequencer", "prune", "--safe", "--json", ...cfg]);
  assert.equal(safe.code, 0, safe.stdout + safe.stderr);
  const pruned = safe.json<{ pruningLowerBound: string }>();
  assert.ok(BigInt(pruned.pruningLowerBound) >= BigInt(status.safePruningTimestamp));
});
