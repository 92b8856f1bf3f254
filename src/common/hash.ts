import { createHash } from "node:crypto";

export type Bytes = Uint8Array;

export function sha256(...parts: (Bytes | string)[]): Buffer {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
}

export function sha256Hex(...parts: (Bytes | string)[]): string {
  return sha256(...parts).toString("hex");
}

/**
 * Length-prefixed concatenation, so hashes of (a, b) and (a', b') never collide by shifting bytes.
 * Built in one buffer and hashed at once: this runs several times per sequenced event.
 */
export function hashFields(...fields: (Bytes | string)[]): Buffer {
  let size = 0;
  for (const f of fields) size += 4 + (typeof f === "string" ? Buffer.byteLength(f, "utf8") : f.length);
  const buffer = Buffer.allocUnsafe(size);
  let at = 0;
  for (const f of fields) {
    let length = 0;
    if (typeof f === "string") length = buffer.write(f, at + 4, "utf8");
    else {
      buffer.set(f, at + 4);
      length = f.length;
    }
    buffer.writeUInt32BE(length, at);
    at += 4 + length;
  }
  return createHash("sha256").update(buffer).digest();
}

export function toHex(bytes: Bytes): string {
  return Buffer.from(bytes).toString("hex");
}

export function fromHex(hex: string): Buffer {
  return Buffer.from(hex, "hex");
}
