#!/usr/bin/env node
// Runs the CLI from one esbuild bundle of src/, so `npm ci && npm start` needs no build step and a
// command does not pay for compiling ~250 TypeScript files on every start (tsx: ≈ 2 s of a loaded
// 2-core machine; the bundle ≈ 0.7 s — it counts in every backup's and restore's fixed time, and
// every node process starts this way). The bundle is rebuilt (≈ 0.2 s) whenever a source is newer;
// tsx runs the sources directly when it cannot be built or written, or with LOCKSTEP_TSX=1.
//
// The bundle sits two folders below the root (bin/.bundle/), as src/<folder>/<file>.ts do, so the
// few `new URL("../../…", import.meta.url)` in the sources resolve to the same files — inside this
// checkout, also when node_modules is a link to another one's.
import { mkdirSync, readdirSync, renameSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const src = join(root, "src");
const bundleDir = join(root, "bin", ".bundle");
const bundle = join(bundleDir, "lockstep-cli.mjs");

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function newestSource() {
  let newest = 0;
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
    newest = Math.max(newest, mtime(join(entry.parentPath ?? entry.path, entry.name)) ?? 0);
  }
  return newest;
}

async function freshBundle() {
  if (process.env.LOCKSTEP_TSX === "1") return undefined;
  const newest = newestSource();
  const built = mtime(bundle);
  // Within a millisecond: utimes below stores the source's time through a Date (whole milliseconds),
  // so an exact comparison would find every bundle stale and rebuild it on each start.
  if (built !== undefined && built + 1 >= newest) return bundle;
  try {
    const { buildSync } = await import("esbuild");
    mkdirSync(bundleDir, { recursive: true });
    // Built beside it and renamed: processes starting at once never read a half-written bundle.
    const tmp = `${bundle}.${process.pid}.tmp`;
    buildSync({
      entryPoints: [join(src, "cli", "main.ts")],
      outfile: tmp,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      // The dependencies too: resolving and loading their ~900 files one by one cost ≈ 70 ms of
      // every start. Only what must stay a package is left out (esbuild and tsx themselves, pg's
      // optional native binding); CommonJS dependencies get a real `require` through the banner.
      external: ["esbuild", "tsx", "pg-native"],
      banner: {
        js: 'import { createRequire as __lockstepRequire } from "node:module"; const require = __lockstepRequire(import.meta.url);',
      },
      // Classes keep their names (errors are matched and printed by name).
      keepNames: true,
      logLevel: "silent",
    });
    // Dated as the newest source it was built from: a source saved during the build is newer.
    utimesSync(tmp, new Date(), new Date(newest));
    renameSync(tmp, bundle);
    return bundle;
  } catch {
    return undefined;
  }
}

const entry = await freshBundle();
if (entry) {
  await import(pathToFileURL(entry).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
