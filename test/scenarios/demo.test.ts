import assert from "node:assert/strict";
import { test } from "node:test";
import { runLockstep } from "../support/cli.ts";

interface DemoJson {
  ok: boolean;
  steps: { step: string; ok: boolean; detail: string }[];
}

// `npm start` runs this: the whole story on the embedded database, exit 0 only if every check passed.
test("lockstep demo tells the backup/restore story and exits 0", async () => {
  const demo = await runLockstep(["demo", "--json"], { timeoutMs: 300_000 });
  const result = demo.json<DemoJson>();
  assert.equal(demo.code, 0, JSON.stringify(result.steps, null, 2));
  assert.equal(result.ok, true);
  const names = result.steps.map((s) => s.step);
  for (const step of [
    "backup create",
    "restore plan",
    "restore apply",
    "deduplication recovery",
    "replay and agreement",
  ]) {
    assert.ok(names.includes(step), `the demo shows ${step}`);
  }
  assert.ok(result.steps.every((s) => s.ok));
  assert.match(
    result.steps.find((s) => s.step === "deduplication recovery")?.detail ?? "",
    /DEDUPLICATION_STATE_RECOVERING/,
  );
});
