import * as grpc from "@grpc/grpc-js";

/**
 * One unary gRPC call with `bytes` as the request message, as is (no encoding): the status grpc-js
 * reports. For what a typed client would never send: oversized or malformed messages.
 */
export function rawUnaryCall(
  port: number,
  path: string,
  bytes: Buffer,
  metadata = new grpc.Metadata(),
): Promise<{ code: grpc.status; details: string }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      metadata,
      (error) => {
        client.close();
        resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? "" });
      },
    );
  });
}

/** A message of about `size` bytes that any request type parses: `size` bytes in unknown field 15 (proto3 keeps unknown fields). */
export function paddedMessage(size: number): Buffer {
  const head: number[] = [(15 << 3) | 2];
  for (let n = size; ; n >>>= 7) {
    if (n < 0x80) {
      head.push(n);
      break;
    }
    head.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from(head), Buffer.alloc(size, 0x61)]);
}
