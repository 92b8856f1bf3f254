import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { hashFields } from "../common/hash.ts";

/**
 * Backup artifacts encrypted at rest (docs/backup.md "Encryption"): an authenticated stream cipher
 * of AES-256-GCM in chunks, after the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
 * "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015), streamed so that
 * memory stays at about two chunks whatever the dump's size.
 *
 *   file    = header ‖ chunk₀ ‖ … ‖ chunkₙ            (n ≥ 0: an empty input is one empty final chunk)
 *   header  = "LKSTPENC" ‖ version 1 ‖ u32 chunk size ‖ key fingerprint (8 bytes) ‖ salt (16)
 *             ‖ nonce prefix (7) ‖ u16 context length ‖ context (UTF-8: `<set>/<path in the set>`)
 *   chunkᵢ  = AES-256-GCM(fileKey, nonce = prefix ‖ u32 i ‖ finalᵢ, aad = header ‖ finalᵢ)(plainᵢ) ‖ tag (16)
 *   fileKey = HKDF-SHA256(backup key, salt, "lockstep/backup-artifact/v1")
 *
 * Every chunk but the last holds exactly `chunk size` bytes of plaintext and final = 0; the last
 * holds 0..chunk size bytes and final = 1. So a chunk reordered (counter in the nonce), a file cut
 * at a chunk boundary or extended (final flag), a header changed (header in the AAD) or a file
 * moved to another node's or set's name (context in the header) all fail authentication. A key per
 * file (random salt) keeps nonces unique however many files one backup key encrypts.
 */

export const ARTIFACT_CIPHER = "aes-256-gcm-stream/v1";
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
export const BACKUP_KEY_BYTES = 32;

const MAGIC = Buffer.from("LKSTPENC", "latin1");
const VERSION = 1;
const FINGERPRINT_BYTES = 8;
const SALT_BYTES = 16;
const PREFIX_BYTES = 7;
const TAG_BYTES = 16;
/** magic, version, chunk size, fingerprint, salt, prefix, context length. */
const FIXED_HEADER_BYTES = MAGIC.length + 1 + 4 + FINGERPRINT_BYTES + SALT_BYTES + PREFIX_BYTES + 2;
const MAX_CONTEXT_BYTES = 1024;
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const MAX_CHUNKS = 2 ** 32;

/** A backup key: 32 bytes, named by its fingerprint (never printed itself). */
export interface BackupKey {
  readonly key: Buffer;
  /** 16 hex digits: the first 8 bytes of SHA-256 over a domain label and the key. */
  readonly fingerprint: string;
}

/**
 * The key's name in manifests and messages: a domain-separated hash (the label keeps it from
 * equalling any other hash of the same bytes, e.g. the wrapper key's fingerprint), cut to 64 bits:
 * enough to tell keys apart, and it reveals nothing of a 256-bit random key.
 */
export function backupKeyFingerprint(key: Buffer): string {
  return hashFields("lockstep/backup-key/v1", key).subarray(0, FINGERPRINT_BYTES).toString("hex");
}

export function backupKey(key: Buffer): BackupKey {
  if (key.length !== BACKUP_KEY_BYTES) throw new Error(`a backup key is ${BACKUP_KEY_BYTES} bytes`);
  return { key, fingerprint: backupKeyFingerprint(key) };
}

/** Why a stream does not decrypt: `format` (not ours, or cut inside the header), `key`, `authentication`. */
export class ArtifactCipherError extends Error {
  constructor(
    readonly kind: "format" | "key" | "context" | "authentication",
    message: string,
  ) {
    super(message);
    this.name = "ArtifactCipherError";
  }
}

/** What an artifact's header says (readable without the key). */
export interface CipherHeader {
  chunkBytes: number;
  fingerprint: string;
  context: string;
  salt: Buffer;
  prefix: Buffer;
  /** The header's bytes, as authenticated with every chunk. */
  bytes: Buffer;
}

function encodeHeader(h: Omit<CipherHeader, "bytes">): Buffer {
  const context = Buffer.from(h.context, "utf8");
  if (context.length > MAX_CONTEXT_BYTES) throw new Error(`context longer than ${MAX_CONTEXT_BYTES} bytes`);
  const out = Buffer.alloc(FIXED_HEADER_BYTES + context.length);
  let at = MAGIC.copy(out, 0);
  at = out.writeUInt8(VERSION, at);
  at = out.writeUInt32BE(h.chunkBytes, at);
  at += Buffer.from(h.fingerprint, "hex").copy(out, at);
  at += h.salt.copy(out, at);
  at += h.prefix.copy(out, at);
  at = out.writeUInt16BE(context.length, at);
  context.copy(out, at);
  return out;
}

/** The header at the start of `data`; undefined while more bytes are needed. */
export function parseHeader(data: Buffer): CipherHeader | undefined {
  if (data.length < MAGIC.length + 1) return undefined;
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new ArtifactCipherError("format", "not an encrypted Lockstep artifact (no LKSTPENC header)");
  }
  const version = data.readUInt8(MAGIC.length);
  if (version !== VERSION) throw new ArtifactCipherError("format", `unknown cipher version ${version}`);
  if (data.length < FIXED_HEADER_BYTES) return undefined;
  let at = MAGIC.length + 1;
  const take = (n: number): Buffer => {
    const field = Buffer.from(data.subarray(at, at + n));
    at += n;
    return field;
  };
  const chunkBytes = take(4).readUInt32BE(0);
  const fingerprint = take(FINGERPRINT_BYTES).toString("hex");
  const salt = take(SALT_BYTES);
  const prefix = take(PREFIX_BYTES);
  const contextBytes = take(2).readUInt16BE(0);
  if (chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES || contextBytes > MAX_CONTEXT_BYTES) {
    throw new ArtifactCipherError("format", "header out of range (chunk size or context length)");
  }
  if (data.length < at + contextBytes) return undefined;
  const context = data.subarray(at, at + contextBytes).toString("utf8");
  return {
    chunkBytes,
    fingerprint,
    context,
    salt,
    prefix,
    bytes: Buffer.from(data.subarray(0, at + contextBytes)),
  };
}

function fileKey(key: BackupKey, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", key.key, salt, "lockstep/backup-artifact/v1", 32));
}

function nonceAndAad(header: CipherHeader, index: number, final: boolean): { nonce: Buffer; aad: Buffer } {
  if (index >= MAX_CHUNKS) throw new ArtifactCipherError("format", "more chunks than the counter allows");
  const nonce = Buffer.alloc(12);
  header.prefix.copy(nonce, 0);
  nonce.writeUInt32BE(index, PREFIX_BYTES);
  nonce.writeUInt8(final ? 1 : 0, PREFIX_BYTES + 4);
  return { nonce, aad: Buffer.concat([header.bytes, Buffer.of(final ? 1 : 0)]) };
}

/**
 * Encrypts a stream: the header, then one sealed chunk per `chunkBytes` of input. `context` names
 * the file (`<set>/<path>`); decryption requires the same.
 */
export function encryptStream(key: BackupKey, context: string, chunkBytes = DEFAULT_CHUNK_BYTES): Transform {
  const header: Omit<CipherHeader, "bytes"> = {
    chunkBytes,
    fingerprint: key.fingerprint,
    context,
    salt: randomBytes(SALT_BYTES),
    prefix: randomBytes(PREFIX_BYTES),
  };
  const full: CipherHeader = { ...header, bytes: encodeHeader(header) };
  const derived = fileKey(key, full.salt);
  let pending: Buffer = Buffer.alloc(0);
  let index = 0;
  const seal = (plain: Buffer, final: boolean): Buffer => {
    const { nonce, aad } = nonceAndAad(full, index++, final);
    const cipher = createCipheriv("aes-256-gcm", derived, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad);
    return Buffer.concat([cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  };
  const transform = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      try {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        // Strictly more than a chunk: the last full chunk may be the final one.
        while (pending.length > chunkBytes) {
          this.push(seal(pending.subarray(0, chunkBytes), false));
          pending = pending.subarray(chunkBytes);
        }
        done();
      } catch (error) {
        done(error as Error);
      }
    },
    flush(done: TransformCallback) {
      try {
        this.push(seal(pending, true));
        done();
      } catch (error) {
        done(error as Error);
      }
    },
  });
  transform.push(full.bytes);
  return transform;
}

/**
 * Decrypts a stream made by encryptStream, emitting only plaintext whose chunk's tag verified; fails
 * (ArtifactCipherError) on another key, another context, or any change, truncation or extension.
 * `key` may be a function of the header's fingerprint (a set of keys), returning undefined when none fits.
 */
export function decryptStream(
  key: BackupKey | ((fingerprint: string) => BackupKey | undefined),
  context: string,
): Transform {
  let header: CipherHeader | undefined;
  let derived: Buffer | undefined;
  let pending: Buffer = Buffer.alloc(0);
  let index = 0;
  const open = (record: Buffer, final: boolean): Buffer => {
    const h = header as CipherHeader;
    const at = index;
    const { nonce, aad } = nonceAndAad(h, index++, final);
    const decipher = createDecipheriv("aes-256-gcm", derived as Buffer, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(record.subarray(record.length - TAG_BYTES));
    const plain = decipher.update(record.subarray(0, record.length - TAG_BYTES));
    try {
      return Buffer.concat([plain, decipher.final()]);
    } catch {
      throw new ArtifactCipherError(
        "authentication",
        `chunk ${at}${final ? " (the last)" : ""} fails authentication: changed, reordered, truncated or extended`,
      );
    }
  };
  const start = (): boolean => {
    header = parseHeader(pending);
    if (!header) return false;
    const found = typeof key === "function" ? key(header.fingerprint) : key;
    if (!found || found.fingerprint !== header.fingerprint) {
      throw new ArtifactCipherError(
        "key",
        `encrypted under backup key ${header.fingerprint}${found ? `, not ${found.fingerprint}` : ", which is not configured"}`,
      );
    }
    if (header.context !== context) {
      throw new ArtifactCipherError("context", `the file is ${header.context}, not ${context}`);
    }
    derived = fileKey(found, header.salt);
    pending = pending.subarray(header.bytes.length);
    return true;
  };
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      try {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        if (!header && !start()) return done();
        const record = (header as CipherHeader).chunkBytes + TAG_BYTES;
        // Strictly more than a record: the last one may be the final one.
        while (pending.length > record) {
          this.push(open(pending.subarray(0, record), false));
          pending = pending.subarray(record);
        }
        done();
      } catch (error) {
        done(error as Error);
      }
    },
    flush(done: TransformCallback) {
      try {
        if (!header && !start()) throw new ArtifactCipherError("format", "the file ends inside its header");
        if (pending.length < TAG_BYTES) {
          throw new ArtifactCipherError("authentication", `truncated: the last chunk (${index}) is missing`);
        }
        this.push(open(pending, true));
        done();
      } catch (error) {
        done(error as Error);
      }
    },
  });
}
