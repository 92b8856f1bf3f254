import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { CryptoConfig } from "../common/config-schema.ts";
import { LockstepError } from "../common/errors.ts";
import { hashFields } from "../common/hash.ts";
import { PLAIN_PROTECTION, type PrivateKeyProtection } from "./key-store.ts";

/**
 * Private keys encrypted at rest (docs/keys.md), as Canton's KMS-wrapped store keeps them: each
 * PKCS8 key is sealed with AES-256-GCM under a wrapper key that lives in a file outside the
 * database, so a stolen dump does not give the keys away. The database keeps the wrapper key's
 * fingerprint beside each row (never the key); backups record it in their manifest.
 *
 * Sealed form: version byte 1 ‖ 12-byte nonce ‖ ciphertext ‖ 16-byte tag. The associated data binds
 * the ciphertext to its key's fingerprint, so a sealed key copied onto another row does not open.
 */

export interface WrapperKey {
  /** `1220` + hex of a SHA-256 over a domain tag and the key: names the key without revealing it. */
  readonly fingerprint: string;
  readonly key: Buffer;
  /** The file it was read from. */
  readonly source: string;
}

const WRAPPER_KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const SEALED_VERSION = 1;

export function wrapperFingerprint(key: Buffer): string {
  return `1220${hashFields("lockstep/wrapper-key/v1", key).toString("hex")}`;
}

/** A wrapper key file: 32 bytes as 64 hex digits (white space around them is ignored). */
export function loadWrapperKey(path: string): WrapperKey {
  const source = resolve(path);
  let text: string;
  try {
    text = readFileSync(source, "utf8").trim();
  } catch (error) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", { path: source, reason: (error as Error).message });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", {
      path: source,
      reason: `it must hold ${WRAPPER_KEY_BYTES} bytes as 64 hex digits`,
    });
  }
  const key = Buffer.from(text, "hex");
  return { fingerprint: wrapperFingerprint(key), key, source };
}

/** Writes a fresh wrapper key file readable by its owner only; refuses to overwrite one. */
export function generateWrapperKeyFile(path: string): WrapperKey {
  const source = resolve(path);
  const key = randomBytes(WRAPPER_KEY_BYTES);
  try {
    writeFileSync(source, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  } catch (error) {
    throw new LockstepError("WRAPPER_KEY_FILE_INVALID", { path: source, reason: (error as Error).message });
  }
  return { fingerprint: wrapperFingerprint(key), key, source };
}

function associatedData(keyFingerprint: string): Buffer {
  return hashFields("lockstep/private-key/v1", keyFingerprint);
}

export function sealPrivateKey(wrapper: WrapperKey, keyFingerprint: string, pkcs8: Buffer): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", wrapper.key, nonce);
  cipher.setAAD(associatedData(keyFingerprint));
  const ciphertext = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  return Buffer.concat([Buffer.from([SEALED_VERSION]), nonce, ciphertext, cipher.getAuthTag()]);
}

export function openPrivateKey(wrapper: WrapperKey, keyFingerprint: string, sealed: Buffer): Buffer {
  if (sealed.length < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] !== SEALED_VERSION) {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `sealed private key ${keyFingerprint} is malformed`,
    });
  }
  const nonce = sealed.subarray(1, 1 + NONCE_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", wrapper.key, nonce);
  decipher.setAAD(associatedData(keyFingerprint));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([
      decipher.update(sealed.subarray(1 + NONCE_BYTES, sealed.length - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw new LockstepError("INTERNAL_ERROR", {
      details: `sealed private key ${keyFingerprint} does not open under wrapper key ${wrapper.fingerprint}: tampered or mislabelled`,
    });
  }
}

/**
 * Sealing under `current`, opening under any of `available` (current and previous wrapper keys).
 * `node` names the node in MISSING_WRAPPER_KEY.
 */
export function wrapperProtection(
  node: string,
  current: WrapperKey,
  previous: readonly WrapperKey[] = [],
): PrivateKeyProtection & { readonly wrappers: ReadonlyMap<string, WrapperKey> } {
  const wrappers = new Map<string, WrapperKey>([current, ...previous].map((w) => [w.fingerprint, w]));
  return {
    current: current.fingerprint,
    wrappers,
    seal: (fingerprint, pkcs8) => sealPrivateKey(current, fingerprint, pkcs8),
    open: (fingerprint, wrapper, stored) => {
      if (wrapper === null) return stored;
      const key = wrappers.get(wrapper);
      if (!key) {
        throw new LockstepError("MISSING_WRAPPER_KEY", {
          node,
          fingerprint: wrapper,
          where: ` (configured: ${[...wrappers.keys()].join(", ")})`,
        });
      }
      return openPrivateKey(key, fingerprint, stored);
    },
  };
}

/** The protection a node's config asks for: its wrapper keys, or plain without crypto.private-key-encryption. */
export function privateKeyProtection(node: string, crypto: CryptoConfig | undefined): PrivateKeyProtection {
  const encryption = crypto?.["private-key-encryption"];
  if (!encryption) return PLAIN_PROTECTION;
  return wrapperProtection(
    node,
    loadWrapperKey(encryption["wrapper-key-file"]),
    encryption["previous-wrapper-key-files"].map(loadWrapperKey),
  );
}
