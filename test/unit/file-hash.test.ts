import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, test } from "node:test";
import { checkFile, hashDirectory, hashFile, hashingStream } from "../../src/backup/file-hash.ts";

// The one hashing module of backup files (src/backup/file-hash.ts): engines write with it, verify
// and restore check with it.

const dir = mkdtempSync(join(tmpdir(), "lockstep-file-hash-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

test("a file: size and SHA-256, streamed across several reads", async () => {
  const data = Buffer.alloc(3 * (1 << 20) + 17, 7); // more than one 1 MiB read
  const path = join(dir, "big.bin");
  writeFileSync(path, data);
  assert.deepEqual(await hashFile(path), { bytes: BigInt(data.length), sha256: sha256(data) });
  const empty = join(dir, "empty.bin");
  writeFileSync(empty, "");
  assert.deepEqual(await hashFile(empty), { bytes: 0n, sha256: sha256("") });
});

test("a stream hashed while written gives the same hash as the file read back", async () => {
  let counted = 0;
  const { transform, digest } = hashingStream((n) => {
    counted += n;
  });
  const path = join(dir, "streamed.bin");
  await pipeline(Readable.from([Buffer.from("abc"), Buffer.from("def")]), transform, createWriteStream(path));
  assert.equal(counted, 6);
  assert.equal(digest(), (await hashFile(path)).sha256);
});

test("a directory: every file below it, sorted, paths relative to the set's directory", async () => {
  const set = join(dir, "set");
  const artifact = join(set, "participant1");
  mkdirSync(join(artifact, "sub"), { recursive: true });
  writeFileSync(join(artifact, "toc.dat"), "toc");
  writeFileSync(join(artifact, "3001.dat.gz"), "data");
  writeFileSync(join(artifact, "sub", "x"), "");
  const files = await hashDirectory(artifact, set, { sync: true });
  assert.deepEqual(files, [
    { path: "participant1/3001.dat.gz", bytes: "4", sha256: sha256("data") },
    { path: "participant1/sub/x", bytes: "0", sha256: sha256("") },
    { path: "participant1/toc.dat", bytes: "3", sha256: sha256("toc") },
  ]);
  // Checked back against those entries: all match.
  for (const file of files) assert.deepEqual(await checkFile(set, file), { ok: true });
});

test("checkFile names what differs: missing, size (without hashing), SHA-256", async () => {
  const path = join(dir, "node.dump");
  writeFileSync(path, "12345");
  const entry = { path: "node.dump", bytes: "5", sha256: sha256("12345") };
  assert.deepEqual(await checkFile(dir, entry), { ok: true });
  assert.deepEqual(await checkFile(dir, { ...entry, path: "gone.dump" }), { ok: false, problem: "missing" });
  assert.deepEqual(await checkFile(dir, { ...entry, bytes: "6" }), { ok: false, problem: "size", bytes: 5n });
  writeFileSync(path, "12346");
  assert.deepEqual(await checkFile(dir, entry), { ok: false, problem: "sha256", sha256: sha256("12346") });
});
