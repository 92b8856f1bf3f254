import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, test } from "node:test";
import {
  ArtifactCipherError,
  backupKey,
  backupKeyFingerprint,
  decryptStream,
  encryptStream,
  parseHeader,
} from "../../src/backup/artifact-cipher.ts";
import { BackupKeys, createBackupKeyFile, loadBackupKey } from "../../src/backup/backup-keys.ts";
import { LockstepError } from "../../src/common/errors.ts";

const key = backupKey(randomBytes(32));
const other = backupKey(randomBytes(32));
const CONTEXT = "20261203T100000Z-abcdef/participant1.dump";

/** Runs bytes through a transform, fed in pieces of `piece` bytes (odd sizes cross chunk edges). */
async function run(transform: NodeJS.ReadWriteStream, input: Buffer, piece = 7): Promise<Buffer> {
  const out: Buffer[] = [];
  const pieces: Buffer[] = [];
  for (let at = 0; at < input.length; at += piece) pieces.push(input.subarray(at, at + piece));
  await pipeline(
    Readable.from(pieces),
    transform,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        out.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(out);
}

const encrypt = (plain: Buffer, chunk = 16, context = CONTEXT) =>
  run(encryptStream(key, context, chunk), plain);
type KeyChoice = Parameters<typeof decryptStream>[0];
const decrypt = (sealed: Buffer, k: KeyChoice = key, context = CONTEXT) =>
  run(decryptStream(k, context), sealed, 5);

async function refused(
  sealed: Buffer,
  kind: ArtifactCipherError["kind"],
  k: KeyChoice = key,
  context = CONTEXT,
) {
  await assert.rejects(decrypt(sealed, k, context), (error: unknown) => {
    assert.ok(error instanceof ArtifactCipherError, String(error));
    assert.equal(error.kind, kind, error.message);
    return true;
  });
}

test("round trip at chunk boundaries, empty input included, in pieces that cross them", async () => {
  for (const size of [0, 1, 15, 16, 17, 31, 32, 33, 16 * 5, 16 * 5 + 3]) {
    const plain = randomBytes(size);
    const sealed = await encrypt(plain);
    const header = parseHeader(sealed);
    assert.ok(header);
    // header, then ⌈size/16⌉ chunks (at least one: the final one), each with a 16-byte tag
    const chunks = Math.max(1, Math.ceil(size / 16));
    assert.equal(sealed.length, header.bytes.length + size + 16 * chunks, `size ${size}`);
    assert.deepEqual(await decrypt(sealed), plain, `size ${size}`);
  }
});

test("the default 64 KiB chunks: a few MiB round-trip, the header names the key's fingerprint only", async () => {
  const plain = randomBytes(3 * 1024 * 1024 + 123);
  const sealed = await run(encryptStream(key, CONTEXT), plain, 100_000);
  const header = parseHeader(sealed);
  assert.equal(header?.chunkBytes, 65536);
  assert.equal(header?.fingerprint, key.fingerprint);
  assert.equal(sealed.indexOf(key.key), -1, "the key is not in the file");
  assert.deepEqual(await run(decryptStream(key, CONTEXT), sealed, 65_537), plain);
});

test("each tampering fails authentication: a flipped byte anywhere, truncation, extension, chunks swapped", async () => {
  const plain = randomBytes(16 * 4 + 5);
  const sealed = await encrypt(plain);
  const headerBytes = (parseHeader(sealed) as { bytes: Buffer }).bytes.length;
  const record = 16 + 16;
  // A flipped bit in every ciphertext and tag byte (the header's are below).
  for (let at = headerBytes; at < sealed.length; at++) {
    const bad = Buffer.from(sealed);
    bad[at] = (bad[at] as number) ^ 0x01;
    await refused(bad, "authentication");
  }
  // Truncated: inside the last chunk, at a chunk boundary (the last full chunk is not final), to the header.
  await refused(sealed.subarray(0, sealed.length - 1), "authentication");
  await refused(sealed.subarray(0, headerBytes + 2 * record), "authentication");
  await refused(sealed.subarray(0, headerBytes), "authentication");
  await assert.rejects(decrypt(sealed.subarray(0, headerBytes - 3)), /ends inside its header/);
  // Extended: a chunk appended, or stray bytes.
  await refused(
    Buffer.concat([sealed, sealed.subarray(headerBytes, headerBytes + record)]),
    "authentication",
  );
  await refused(Buffer.concat([sealed, Buffer.from("x")]), "authentication");
  // Chunks 0 and 1 swapped.
  const swapped = Buffer.concat([
    sealed.subarray(0, headerBytes),
    sealed.subarray(headerBytes + record, headerBytes + 2 * record),
    sealed.subarray(headerBytes, headerBytes + record),
    sealed.subarray(headerBytes + 2 * record),
  ]);
  await refused(swapped, "authentication");
});

test("a changed header fails: salt or nonce prefix, chunk size, fingerprint, context; another file's chunks too", async () => {
  const sealed = await encrypt(randomBytes(40));
  const header = parseHeader(sealed);
  assert.ok(header);
  // salt and prefix: bytes 21..43 of the header (after magic, version, chunk size, fingerprint)
  for (const at of [21, 30, 37, 43]) {
    const bad = Buffer.from(sealed);
    bad[at] = (bad[at] as number) ^ 0x80;
    await refused(bad, "authentication");
  }
  const chunk = Buffer.from(sealed);
  chunk.writeUInt32BE(17, 9);
  await refused(chunk, "authentication");
  // The fingerprint field: the key no longer fits it.
  const fp = Buffer.from(sealed);
  fp[13] = (fp[13] as number) ^ 0x01;
  await refused(fp, "key");
  // The same bytes under another name (a file swapped for another node's): refused by context.
  await refused(sealed, "context", key, "20261203T100000Z-abcdef/mediator1.dump");
  // A context edited in the header to match: the tags no longer verify.
  const renamed = await encrypt(randomBytes(40), 16, "20261203T100000Z-abcdef/participant1.dumq");
  const edited = Buffer.from(renamed);
  edited[header.bytes.length - 1] = "p".charCodeAt(0);
  await refused(edited, "authentication");
  // A chunk taken from another file encrypted under the same key: another per-file key.
  const second = await encrypt(randomBytes(40));
  const mixed = Buffer.concat([
    sealed.subarray(0, header.bytes.length),
    second.subarray(header.bytes.length, header.bytes.length + 32),
    sealed.subarray(header.bytes.length + 32),
  ]);
  await refused(mixed, "authentication");
  await assert.rejects(
    decrypt(Buffer.from("PGDMP not encrypted at all")),
    /not an encrypted Lockstep artifact/,
  );
});

test("another key is refused by fingerprint before any chunk; a key chooser gets the header's fingerprint", async () => {
  const sealed = await encrypt(randomBytes(40));
  await refused(sealed, "key", other);
  const seen: string[] = [];
  const plain = await run(
    decryptStream((fp) => {
      seen.push(fp);
      return [other, key].find((k) => k.fingerprint === fp);
    }, CONTEXT),
    sealed,
  );
  assert.equal(plain.length, 40);
  assert.deepEqual(seen, [key.fingerprint]);
  await refused(sealed, "key", () => undefined);
});

const dir = mkdtempSync(join(tmpdir(), "lockstep-backup-key-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("key files: created 0600 under umask 022, never overwritten, 64 hex digits, looked up by fingerprint", () => {
  const path = join(dir, "backup.key");
  const previousUmask = process.umask(0o022);
  try {
    const created = createBackupKeyFile(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.match(readFileSync(path, "utf8"), /^[0-9a-f]{64}\n$/);
    assert.match(created.fingerprint, /^[0-9a-f]{16}$/);
    assert.equal(created.fingerprint, backupKeyFingerprint(created.key));
    assert.equal(loadBackupKey(path).fingerprint, created.fingerprint);
    assert.throws(
      () => createBackupKeyFile(path),
      (e: unknown) =>
        e instanceof LockstepError &&
        e.code === "BACKUP_KEY_FILE_INVALID" &&
        /never overwritten/.test(e.message),
    );
    const old = createBackupKeyFile(join(dir, "old.key"));
    const keys = new BackupKeys({ "key-file": path, "previous-key-files": [old.source] });
    assert.equal(keys.current()?.fingerprint, created.fingerprint);
    assert.equal(keys.require(old.fingerprint, "s", "a").source, old.source);
    assert.throws(
      () => keys.require("0123456789abcdef", "s", "p1.dump"),
      (e: unknown) =>
        e instanceof LockstepError &&
        e.code === "BACKUP_KEY_MISMATCH" &&
        e.message.includes("0123456789abcdef"),
    );
    assert.throws(
      () => new BackupKeys(undefined).require(created.fingerprint, "s", "p1.dump"),
      (e: unknown) =>
        e instanceof LockstepError &&
        e.code === "BACKUP_KEY_MISSING" &&
        e.message.includes(created.fingerprint),
    );
  } finally {
    process.umask(previousUmask);
  }
});
