import assert from "node:assert/strict";
import { test } from "node:test";
import { runLockstep } from "../support/cli.ts";

interface DemoJson {
  ok: boolean;
  nodes: { name: string; running: boolean; role: string }[];
}

// `npm start` runs this: it must work on the embedded database and exit 0 only if every check passed.
test("lockstep demo runs the example network and exits 0", async () => {
  const demo = await runLockstep(["demo", "--json"], { timeoutMs: 180_000 });
  assert.equal(demo.code, 0, demo.stderr);
  const result = demo.json<DemoJson>();
  assert.equal(result.ok, true);
  assert.deepEqual(
    result.nodes.map((n) => [n.name, n.running, n.role]),
    [
      ["sequencer1", true, "active"],
      ["mediator1", true, "active"],
      ["participant1", true, "active"],
      ["participant2", true, "active"],
    ],
  );
});
