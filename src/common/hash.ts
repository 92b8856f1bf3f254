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

/** Length-prefixed concatenation, so hashes of (a, b) and (a', b') never collide by shifting bytes. */
export function hashFields(...fields: (Bytes | string)[]): Buffer {
  const h = createHash("sha256");
  for (const f of fields) {
    const bytes = typeof f === "string" ? Buffer.from(f, "utf8") : f;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(len).update(bytes);
  }
  return h.digest();
}

export function toHex(bytes: Bytes): string {
  return Buffer.from(bytes).toString("hex");
}

export function fromHex(hex: string): Buffer {
  return Buffer.from(hex, "hex");
}
