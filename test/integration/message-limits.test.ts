import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { silentLogger } from "../../src/common/logging.ts";
import { adminServiceRoutes } from "../../src/node/admin-service.ts";
import { DEFAULT_READ_MAX_BYTES, MESSAGE_LIMITS, NodeServer } from "../../src/node/node-server.ts";
import { paddedMessage as padded, rawUnaryCall } from "../support/raw-grpc.ts";

// The node server's inbound limit and its answer to malformed protobuf over gRPC (HTTP/2, grpc-js as
// Canton's clients would), the path the Ledger API's JSON test (hostile-input.test.ts) does not take.
const LIMIT = 64 * 1024;
let server: NodeServer;
let port: number;

before(async () => {
  server = new NodeServer({
    node: "n1",
    port: 0,
    logger: silentLogger(),
    health: () => ({ node: "n1", kind: "participant", status: "active" }),
    routes: adminServiceRoutes({
      status: () => ({ name: "n1", kind: "participant", role: "active", writerEpoch: 1n, pid: 1 }),
      shutdown: () => {},
    }),
    readMaxBytes: LIMIT,
  });
  port = await server.start();
});

after(() => server?.stop());

/** GetStatus with `bytes` as the request message, as is. */
const rawGetStatus = (bytes: Buffer) =>
  rawUnaryCall(port, "/lockstep.admin.v1.AdminService/GetStatus", bytes);

test("defaults: gRPC's 4 MiB for participants and mediators, more for the sequencer's batches", () => {
  assert.equal(DEFAULT_READ_MAX_BYTES, 4 * 1024 * 1024);
  assert.equal(MESSAGE_LIMITS.participant, DEFAULT_READ_MAX_BYTES);
  assert.equal(MESSAGE_LIMITS.mediator, DEFAULT_READ_MAX_BYTES);
  assert.ok(MESSAGE_LIMITS.sequencer > DEFAULT_READ_MAX_BYTES);
});

test("gRPC: a message over readMaxBytes gets RESOURCE_EXHAUSTED, one under it is served", async () => {
  const under = await rawGetStatus(padded(LIMIT - 16));
  assert.equal(under.code, grpc.status.OK, under.details);
  const over = await rawGetStatus(padded(LIMIT + 1));
  assert.equal(over.code, grpc.status.RESOURCE_EXHAUSTED, over.details);
  assert.match(over.details, new RegExp(`larger than configured readMaxBytes ${LIMIT}`));
});

test("gRPC: malformed protobuf gets INVALID_ARGUMENT, not INTERNAL", async () => {
  for (const bytes of [[0], [0xff, 0xff, 0xff, 0xff, 0x0f], [(1 << 3) | 2, 0x7f, 1, 2]]) {
    const r = await rawGetStatus(Buffer.from(bytes));
    assert.equal(r.code, grpc.status.INVALID_ARGUMENT, `${JSON.stringify(bytes)}: ${r.details}`);
    assert.match(r.details, /^parse binary:/);
  }
  // The node still serves.
  assert.equal((await rawGetStatus(Buffer.alloc(0))).code, grpc.status.OK);
});
