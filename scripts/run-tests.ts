/**
 * `npm test`: runs every test file with node's test runner, several files at a time (each file
 * starts its own PostgreSQL clusters and nodes on free ports, so files are independent), prints
 * each file's output as one block when it ends, the time each file took, and a closing line
 * `N passed, N failed`. Exit code 1 if any test or file failed.
 *
 *   tsx scripts/run-tests.ts [FILES...]      default: test/unit, test/integration, test/scenarios
 *   LOCKSTEP_TEST_JOBS=1                     files at a time (default 2: the CI machine has 2 cores)
 */
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

interface FileResult {
  file: string;
  seconds: number;
  passed: number;
  failed: number;
  exitCode: number;
  /** For a failed file: the test runner's failure details, re-printed at the very end. */
  failures?: string;
}

const DIRS = ["test/unit", "test/integration", "test/scenarios"];

function defaultFiles(): string[] {
  return DIRS.flatMap((dir) =>
    readdirSync(dir)
      .filter((f) => f.endsWith(".test.ts"))
      .sort()
      .map((f) => join(dir, f)),
  );
}

const count = (output: string, what: string): number =>
  Number(new RegExp(`^ℹ ${what} (\\d+)$`, "m").exec(output)?.[1] ?? 0);

function runFile(file: string): Promise<FileResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", file],
      { stdio: ["ignore", "pipe", "pipe"], env: process.env },
    );
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    child.stderr.on("data", (d) => {
      output += d;
    });
    child.on("close", (code, signal) => {
      const seconds = (Date.now() - started) / 1000;
      process.stdout.write(`\n=== ${file} (${seconds.toFixed(1)} s)\n${output}`);
      const exitCode = code ?? (signal ? 128 : 1);
      const failed = count(output, "fail") + (exitCode !== 0 && count(output, "fail") === 0 ? 1 : 0);
      const result: FileResult = { file, seconds, passed: count(output, "pass"), failed, exitCode };
      if (failed > 0) result.failures = failureDetails(output);
      resolve(result);
    });
  });
}

/**
 * The spec reporter's "failing tests" section (assertion, expected/actual, stack), else the output's
 * tail: printed again after the summary, since CI logs are often read from their end.
 */
function failureDetails(output: string): string {
  const at = output.lastIndexOf("✖ failing tests:");
  const lines = (at >= 0 ? output.slice(at) : output).split("\n");
  return (at >= 0 ? lines.slice(0, 120) : lines.slice(-80)).join("\n");
}

/** Longest first, so a long scenario does not start last and leave the other slot idle. */
function order(files: string[]): string[] {
  const rank = (f: string) => (f.includes("/scenarios/") ? 0 : f.includes("/integration/") ? 1 : 2);
  return [...files].sort((a, b) => rank(a) - rank(b));
}

async function main(): Promise<void> {
  const files = order(process.argv.length > 2 ? process.argv.slice(2) : defaultFiles());
  const jobs = Math.max(1, Number(process.env.LOCKSTEP_TEST_JOBS ?? 2));
  const started = Date.now();
  const results: FileResult[] = [];
  const queue = [...files];
  await Promise.all(
    Array.from({ length: Math.min(jobs, queue.length) }, async () => {
      for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
        results.push(await runFile(file));
      }
    }),
  );
  const passed = results.reduce((n, r) => n + r.passed, 0);
  const failed = results.reduce((n, r) => n + r.failed, 0);
  process.stdout.write(`\ntime per test file (${jobs} at a time):\n`);
  for (const r of [...results].sort((a, b) => b.seconds - a.seconds)) {
    process.stdout.write(
      `  ${r.seconds.toFixed(1).padStart(7)} s  ${r.failed > 0 ? "FAIL" : "ok  "}  ${r.file}\n`,
    );
  }
  const wall = ((Date.now() - started) / 1000).toFixed(1);
  process.stdout.write(`total ${wall} s for ${results.length} files\n`);
  for (const r of results.filter((x) => x.failed > 0)) {
    process.stdout.write(`\n--- ${r.file}: what failed\n${r.failures ?? ""}\n`);
  }
  for (const r of results.filter((x) => x.failed > 0)) process.stdout.write(`failed: ${r.file}\n`);
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
