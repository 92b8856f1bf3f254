import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { type Bytes, hashFields, sha256Hex } from "../common/hash.ts";
import { int64Bytes } from "../common/sequenced-event.ts";

/**
 * Ed25519 keys through node:crypto only. A node has a namespace key (its identity: member and
 * party ids end in its fingerprint, and it signs topology transactions) and signing keys (for
 * protocol messages; the sequencer's signs sequenced events). docs/design.md §2 "Topology and keys".
 */
export type KeyPurpose = "namespace" | "signing";

export interface KeyPair {
  /** Canton style: `"1220" + sha256hex(raw public key)`. */
  readonly fingerprint: string;
  readonly purpose: KeyPurpose;
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;
  readonly privateKey: KeyObject;
}

/** Public half of a key as topology carries it. */
export interface PublicKeyInfo {
  readonly fingerprint: string;
  readonly publicKey: Buffer;
}

const PUBLIC_KEY_LENGTH = 32;
const SIGNATURE_LENGTH = 64;
/** Multihash prefix for SHA-256 (0x12) with a 32-byte digest (0x20), as Canton's fingerprints start. */
const FINGERPRINT_PREFIX = "1220";
export const FINGERPRINT_PATTERN = /^1220[0-9a-f]{64}$/;

export function fingerprint(publicKeyRaw: Bytes): string {
  return FINGERPRINT_PREFIX + sha256Hex(publicKeyRaw);
}

export function generateKeyPair(purpose: KeyPurpose): KeyPair {
  const { privateKey } = generateKeyPairSync("ed25519");
  return keyPairFromPrivateKey(privateKey, purpose);
}

/** Rebuilds a key pair from its private key (a KeyObject or PKCS8 DER bytes, as the key store keeps it). */
export function keyPairFromPrivateKey(privateKey: KeyObject | Bytes, purpose: KeyPurpose): KeyPair {
  const key = isKeyObject(privateKey) ? privateKey : importPrivateKey(privateKey);
  if (key.asymmetricKeyType !== "ed25519") throw new TypeError("not an Ed25519 private key");
  const publicKey = exportPublicKey(createPublicKey(key));
  return { fingerprint: fingerprint(publicKey), purpose, publicKey, privateKey: key };
}

/** Raw 32-byte public key of an Ed25519 KeyObject (public or private). */
export function exportPublicKey(key: KeyObject): Buffer {
  const publicKey = key.type === "private" ? createPublicKey(key) : key;
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.crv !== "Ed25519" || typeof jwk.x !== "string") throw new TypeError("not an Ed25519 key");
  return Buffer.from(jwk.x, "base64url");
}

export function importPublicKey(publicKeyRaw: Bytes): KeyObject {
  if (publicKeyRaw.length !== PUBLIC_KEY_LENGTH) {
    throw new TypeError(`an Ed25519 public key has ${PUBLIC_KEY_LENGTH} bytes, got ${publicKeyRaw.length}`);
  }
  const x = Buffer.from(publicKeyRaw).toString("base64url");
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
}

/** PKCS8 DER, the form the private key store keeps. */
export function exportPrivateKey(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "pkcs8" });
}

export function importPrivateKey(pkcs8Der: Bytes): KeyObject {
  return createPrivateKey({ key: Buffer.from(pkcs8Der), format: "der", type: "pkcs8" });
}

export function sign(privateKey: KeyObject, bytes: Bytes): Buffer {
  return nodeSign(null, bytes, privateKey);
}

/**
 * sign() on the libuv thread pool: the event loop stays free meanwhile, and many signatures
 * started together run on every core (the sequencer signs each member view of a batch).
 */
export function signAsync(privateKey: KeyObject, bytes: Bytes): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    nodeSign(null, bytes, privateKey, (error, signature) => (error ? reject(error) : resolve(signature))),
  );
}

/** False (never throws) for a wrong signature, a malformed key or a malformed signature. */
export function verify(publicKeyRaw: Bytes, bytes: Bytes, signature: Bytes): boolean {
  const key = verificationKey(publicKeyRaw, signature);
  return key !== undefined && nodeVerify(null, bytes, key, signature);
}

/** verify() on the libuv thread pool (see signAsync); resolves false, never rejects, as verify(). */
export function verifyAsync(publicKeyRaw: Bytes, bytes: Bytes, signature: Bytes): Promise<boolean> {
  const key = verificationKey(publicKeyRaw, signature);
  if (key === undefined) return Promise.resolve(false);
  return new Promise((resolve) =>
    nodeVerify(null, bytes, key, signature, (error, valid) => resolve(!error && valid)),
  );
}

/** The key to verify with, or undefined when the key or the signature cannot be valid. */
function verificationKey(publicKeyRaw: Bytes, signature: Bytes): KeyObject | undefined {
  if (signature.length !== SIGNATURE_LENGTH) return undefined;
  try {
    return cachedPublicKey(publicKeyRaw);
  } catch {
    return undefined;
  }
}

/**
 * What a signature is for. Requests and topology transactions are signed over
 * `signingDigest(purpose, …fields)`, so a signature made for one purpose never verifies for another
 * (as Canton's HashPurpose does). Sequenced events are signed over `contentHash ‖ chainHash`
 * (64 bytes, see sequenced-event.ts), which can never equal a 32-byte digest.
 */
export type SignaturePurpose =
  | "topology-transaction"
  | "submission"
  | "submission-batch"
  | "subscription"
  | "acknowledgement"
  | "confirmation-response";

export function signingDigest(purpose: SignaturePurpose, ...fields: (Bytes | string)[]): Buffer {
  return hashFields(`lockstep/${purpose}/v1`, ...fields);
}

// --- what members sign in sequencer requests (sequencer.proto documents the same) ---

/** Signed by the sender in SendRequest: the serialized Submission bytes as sent. */
export function submissionDigest(submission: Bytes): Buffer {
  return signingDigest("submission", submission);
}

/** Signed by the sender in SendBatchRequest.signed: its sender and every serialized Submission. */
export function submissionBatchDigest(sender: string, submissions: readonly Bytes[]): Buffer {
  return signingDigest("submission-batch", sender, ...submissions);
}

/**
 * Signed by the member in SubscribeRequest; an absent fromTimestamp hashes as zero bytes. The
 * writer activation is signed with the epoch, so neither can be swapped in transit.
 */
export function subscriptionDigest(request: {
  member: string;
  fromTimestamp: bigint | null;
  writerEpoch: bigint;
  issuedAt: bigint;
  nonce: Bytes;
  writerActivation: string;
}): Buffer {
  return signingDigest(
    "subscription",
    request.member,
    request.fromTimestamp === null ? Buffer.alloc(0) : int64Bytes(request.fromTimestamp),
    int64Bytes(request.writerEpoch),
    int64Bytes(request.issuedAt),
    request.nonce,
    request.writerActivation,
  );
}

/** Signed by the member in AcknowledgeRequest. */
export function acknowledgementDigest(request: {
  member: string;
  timestamp: bigint;
  writerEpoch: bigint;
  writerActivation: string;
}): Buffer {
  return signingDigest(
    "acknowledgement",
    request.member,
    int64Bytes(request.timestamp),
    int64Bytes(request.writerEpoch),
    request.writerActivation,
  );
}

// Verifying recreates a KeyObject per call otherwise; members verify the same few keys all day.
const publicKeyCache = new Map<string, KeyObject>();
const PUBLIC_KEY_CACHE_LIMIT = 1024;

function cachedPublicKey(publicKeyRaw: Bytes): KeyObject {
  const hex = Buffer.from(publicKeyRaw).toString("hex");
  let key = publicKeyCache.get(hex);
  if (!key) {
    key = importPublicKey(publicKeyRaw);
    if (publicKeyCache.size >= PUBLIC_KEY_CACHE_LIMIT) publicKeyCache.clear();
    publicKeyCache.set(hex, key);
  }
  return key;
}

function isKeyObject(value: KeyObject | Bytes): value is KeyObject {
  return !(value instanceof Uint8Array);
}
