import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, test } from "node:test";
import {
  ArtifactCipherError,
  backupKey,
  decryptStream,
  encryptStream,
  parseHeader,
} from "../../src/backup/artifact-cipher.ts";
import { loadBackupKey } from "../../src/backup/backup-keys.ts";
import { LockstepError } from "../../src/common/errors.ts";

// Attacks on the artifact cipher (artifact-cipher.ts) by someone who can write the backup
// repository but does not hold the key: every rearrangement of what they can see (chunks, headers,
// whole files of other sets) must fail to decrypt, and nothing but authenticated plaintext may come
// out before the failure. The round trips and single-byte flips are in artifact-cipher.test.ts.

const key = backupKey(randomBytes(32));
const CHUNK = 16;
const RECORD = CHUNK + 16; // ciphertext of a full chunk and its tag
const SET_A = "20261203T100000Z-aaaaaa";
const SET_B = "20261203T110000Z-bbbbbb";
const CONTEXT = `${SET_A}/participant1.dump`;

/** Runs bytes through a transform in odd-sized pieces; the output so far is kept even on failure. */
async function run(
  transform: NodeJS.ReadWriteStream,
  input: Buffer,
  piece = 7,
): Promise<{ out: Buffer; error?: unknown }> {
  const out: Buffer[] = [];
  const pieces: Buffer[] = [];
  for (let at = 0; at < input.length; at += piece) pieces.push(input.subarray(at, at + piece));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk);
      done();
    },
  });
  try {
    await pipeline(Readable.from(pieces), transform, sink);
    return { out: Buffer.concat(out) };
  } catch (error) {
    return { out: Buffer.concat(out), error };
  }
}

async function seal(plain: Buffer, context = CONTEXT): Promise<Buffer> {
  const { out, error } = await run(encryptStream(key, context, CHUNK), plain);
  assert.equal(error, undefined);
  return out;
}

/** A sealed file cut into its header and its records (each a chunk's ciphertext and tag). */
function split(sealed: Buffer): { header: Buffer; records: Buffer[] } {
  const header = parseHeader(sealed);
  assert.ok(header);
  const records: Buffer[] = [];
  for (let at = header.bytes.length; at < sealed.length; at += RECORD)
    records.push(sealed.subarray(at, at + RECORD));
  return { header: header.bytes, records };
}

/**
 * Decrypts `sealed` expecting a refusal of `kind` (any kind when omitted); whatever came out
 * before it must be a prefix of `plain` made of whole authenticated chunks.
 */
async function refused(
  sealed: Buffer,
  plain: Buffer,
  what: string,
  kind?: ArtifactCipherError["kind"],
  context = CONTEXT,
): Promise<Buffer> {
  const { out, error } = await run(decryptStream(key, context), sealed, 5);
  assert.ok(error instanceof ArtifactCipherError, `${what}: decrypted (${out.length} bytes) or ${error}`);
  if (kind) assert.equal(error.kind, kind, `${what}: ${error.message}`);
  assert.equal(out.length % CHUNK, 0, `${what}: only whole chunks are released`);
  assert.deepEqual(out, plain.subarray(0, out.length), `${what}: only the file's own plaintext, in order`);
  return out;
}

const permutations = <T>(items: T[]): T[][] =>
  items.length <= 1
    ? [items]
    : items.flatMap((item, i) =>
        permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
      );

test("a file cut at every chunk boundary fails: the last chunk kept is not marked final", async () => {
  const plain = randomBytes(CHUNK * 4 + 5);
  const { header, records } = split(await seal(plain));
  assert.equal(records.length, 5);
  for (let kept = 0; kept < records.length; kept++) {
    const cut = Buffer.concat([header, ...records.slice(0, kept)]);
    const out = await refused(cut, plain, `cut after ${kept} chunk(s)`, "authentication");
    // What came out before the refusal is at most the chunks before the one opened as the last.
    assert.ok(out.length <= Math.max(0, kept - 1) * CHUNK, `cut after ${kept}: ${out.length} bytes out`);
  }
});

test("a file of exactly one full chunk, and an empty one: cut, extended or given a second chunk, all fail", async () => {
  for (const size of [CHUNK, 0]) {
    const plain = randomBytes(size);
    const sealed = await seal(plain);
    const { header, records } = split(sealed);
    assert.equal(records.length, 1, `size ${size}: one final chunk`);
    const only = records[0] as Buffer;
    assert.equal(only.length, size + 16);
    await refused(header, plain, `size ${size}: header only`, "authentication");
    await refused(Buffer.concat([sealed, only]), plain, `size ${size}: its chunk twice`, "authentication");
    await refused(
      Buffer.concat([sealed, Buffer.alloc(1)]),
      plain,
      `size ${size}: one byte more`,
      "authentication",
    );
    await refused(
      Buffer.concat([sealed, randomBytes(16)]),
      plain,
      `size ${size}: a stray tag`,
      "authentication",
    );
    await refused(
      sealed.subarray(0, sealed.length - 1),
      plain,
      `size ${size}: a byte less`,
      "authentication",
    );
    // Its last chunk taken from another encryption of the same plaintext under the same name.
    const again = split(await seal(plain)).records[0] as Buffer;
    await refused(
      Buffer.concat([header, again]),
      plain,
      `size ${size}: another file's chunk`,
      "authentication",
    );
  }
});

test("chunks reordered (every permutation), duplicated or dropped in the middle all fail", async () => {
  const plain = randomBytes(CHUNK * 3 + 9);
  const { header, records } = split(await seal(plain));
  const order = records.map((_, i) => i);
  for (const p of permutations(order)) {
    if (p.join() === order.join()) continue;
    await refused(
      Buffer.concat([header, ...p.map((i) => records[i] as Buffer)]),
      plain,
      `order ${p.join()}`,
      "authentication",
    );
  }
  const [r0, r1, r2, r3] = records as [Buffer, Buffer, Buffer, Buffer];
  await refused(Buffer.concat([header, r0, r0, r2, r3]), plain, "chunk 0 twice", "authentication");
  await refused(Buffer.concat([header, r0, r1, r1, r2, r3]), plain, "chunk 1 repeated", "authentication");
  await refused(Buffer.concat([header, r0, r2, r3]), plain, "chunk 1 dropped", "authentication");
  await refused(Buffer.concat([header, r0, r1, r2, r3, r3]), plain, "the last twice", "authentication");
});

test("a chunk or a file from another set or another node does not fit: per-file keys, names bound", async () => {
  const plain = randomBytes(CHUNK * 3);
  const sealed = await seal(plain);
  const { header, records } = split(sealed);
  // The same node's artifact of another set, same plaintext, same key.
  const otherSet = await seal(plain, `${SET_B}/participant1.dump`);
  const other = split(otherSet);
  for (let i = 0; i < records.length; i++) {
    const mixed = [...records];
    mixed[i] = other.records[i] as Buffer;
    await refused(Buffer.concat([header, ...mixed]), plain, `chunk ${i} from set B`, "authentication");
  }
  // The other set's whole file put in this one's place: refused by its name before any chunk.
  await refused(otherSet, plain, "set B's file in set A", "context");
  // Its header kept but its name edited to this one's (same length): the tags no longer verify.
  const renamed = Buffer.from(otherSet);
  const at = other.header.indexOf(Buffer.from(SET_B));
  Buffer.from(SET_A).copy(renamed, at);
  await refused(renamed, plain, "set B's file renamed in its header", "authentication");
  // Another node's file of the same set; and a header of one file on the chunks of another.
  await refused(await seal(plain, `${SET_A}/mediator1.dump`), plain, "mediator1's file", "context");
  await refused(
    Buffer.concat([header, ...other.records]),
    plain,
    "this header, set B's chunks",
    "authentication",
  );
  // A directory-format file under another file's name (`<node>/<file>` is the binding too).
  const toc = await seal(plain, `${SET_A}/participant1/toc.dat`);
  await refused(toc, plain, "toc.dat as 3001.dat", "context", `${SET_A}/participant1/3001.dat`);
});

test("every header byte altered fails, whatever it holds (magic, version, chunk size, fingerprint, salt, prefix, name)", async () => {
  const plain = randomBytes(CHUNK * 2 + 3);
  const sealed = await seal(plain);
  const { header } = split(sealed);
  for (let at = 0; at < header.length; at++) {
    for (const mask of [0x01, 0x80]) {
      const bad = Buffer.from(sealed);
      bad[at] = (bad[at] as number) ^ mask;
      await refused(bad, plain, `header byte ${at} ^ ${mask}`);
    }
  }
  // The chunk size set to what would re-cut the records (2×, ½, 1, the maximum, beyond it).
  for (const size of [CHUNK * 2, CHUNK / 2, 1, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1, 0]) {
    const bad = Buffer.from(sealed);
    bad.writeUInt32BE(size, 9);
    await refused(bad, plain, `chunk size ${size}`);
  }
  // Version 2, or no header at all (a plain dump where an encrypted one is expected).
  const v2 = Buffer.from(sealed);
  v2[8] = 2;
  await refused(v2, plain, "version 2", "format");
  await refused(Buffer.concat([Buffer.from("PGDMP"), randomBytes(64)]), plain, "a plain dump", "format");
  await refused(Buffer.alloc(0), plain, "an empty file", "format");
});

test("a tampered chunk in the middle: only the chunks before it come out, then the refusal", async () => {
  const plain = randomBytes(CHUNK * 6 + 1);
  const sealed = await seal(plain);
  const { header, records } = split(sealed);
  const bad = records.map((r) => Buffer.from(r));
  (bad[3] as Buffer)[0] = ((bad[3] as Buffer)[0] as number) ^ 0x04;
  const out = await refused(Buffer.concat([header, ...bad]), plain, "chunk 3 flipped", "authentication");
  assert.equal(out.length, 3 * CHUNK, "chunks 0..2, authenticated, and nothing of chunk 3");
});

test("two encryptions of the same bytes under the same key and name share no header salt, prefix or chunk", async () => {
  const plain = Buffer.alloc(CHUNK * 3, 0x41);
  const a = await seal(plain);
  const b = await seal(plain);
  const [ha, hb] = [parseHeader(a), parseHeader(b)];
  assert.ok(ha && hb);
  assert.notDeepEqual(ha.salt, hb.salt);
  assert.notDeepEqual(ha.prefix, hb.prefix);
  const ra = split(a).records;
  const rb = split(b).records;
  for (let i = 0; i < ra.length; i++) assert.notDeepEqual(ra[i], rb[i], `chunk ${i}`);
  // Equal plaintext chunks within one file do not show either (a nonce per chunk).
  assert.notDeepEqual(ra[0], ra[1]);
});

const dir = mkdtempSync(join(tmpdir(), "lockstep-key-attacks-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function keyRefused(path: string, reason: RegExp): void {
  assert.throws(
    () => loadBackupKey(path),
    (e: unknown) => {
      assert.ok(e instanceof LockstepError, String(e));
      assert.equal(e.code, "BACKUP_KEY_FILE_INVALID");
      assert.match(e.message, reason);
      return true;
    },
  );
}

test("key files: any group or other bit refuses (as ssh and PostgreSQL do); wrong length, not hex, missing: refused", () => {
  const hex = randomBytes(32).toString("hex");
  const file = (name: string, text: string, mode = 0o600) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return path;
  };
  assert.equal(loadBackupKey(file("ok.key", `${hex}\n`)).key.toString("hex"), hex);
  assert.equal(loadBackupKey(file("read-only.key", hex, 0o400)).key.toString("hex"), hex);
  for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610]) {
    keyRefused(
      file(`mode-${mode.toString(8)}.key`, hex, mode),
      new RegExp(`mode 0${mode.toString(8)}.*chmod 600`),
    );
  }
  keyRefused(file("short.key", hex.slice(0, 62)), /64 hex digits/);
  keyRefused(file("long.key", `${hex}00`), /64 hex digits/);
  keyRefused(file("base64.key", randomBytes(32).toString("base64")), /64 hex digits/);
  keyRefused(file("binary.key", randomBytes(32).toString("latin1")), /64 hex digits/);
  keyRefused(file("empty.key", ""), /64 hex digits/);
  keyRefused(file("two.key", `${hex}\n${hex}\n`), /64 hex digits/);
  keyRefused(join(dir, "absent.key"), /ENOENT/);
});
