import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { LockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import {
  AdminService,
  GetStatusRequestSchema,
  type GetStatusResponse,
  GetStatusResponseSchema,
} from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import { adminServiceRoutes } from "../../src/node/admin-service.ts";
import { adminClient } from "../../src/node/clients.ts";
import { fromConnectError } from "../../src/node/error-interceptor.ts";
import type { HealthReport } from "../../src/node/health.ts";
import { NodeServer } from "../../src/node/node-server.ts";

type StatusInit = MessageInitShape<typeof GetStatusResponseSchema>;

interface Harness {
  server: NodeServer;
  port: number;
  /** What GetStatus does; tests swap it to throw. */
  status: () => StatusInit;
  health: HealthReport;
  shutdowns: number;
}

const servers: NodeServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

async function startHarness(
  options: { port?: number; host?: string; shutdownGraceMs?: number } = {},
): Promise<Harness> {
  const h: Harness = {
    port: 0,
    status: () => ({ name: "n1", kind: "sequencer", role: "active", writerEpoch: 7n, pid: 42 }),
    health: { node: "n1", kind: "sequencer", status: "active" },
    shutdowns: 0,
    server: undefined as unknown as NodeServer,
  };
  h.server = new NodeServer({
    node: "n1",
    port: options.port ?? 0,
    host: options.host,
    logger: silentLogger(),
    shutdownGraceMs: options.shutdownGraceMs,
    health: () => h.health,
    routes: adminServiceRoutes({
      status: () => h.status(),
      shutdown: () => {
        h.shutdowns++;
      },
    }),
  });
  servers.push(h.server);
  h.port = await h.server.start();
  return h;
}

function grpcGetStatus(port: number): Promise<{ response?: GetStatusResponse; error?: grpc.ServiceError }> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/lockstep.admin.v1.AdminService/GetStatus",
      (req: MessageInitShape<typeof GetStatusRequestSchema>) =>
        Buffer.from(toBinary(GetStatusRequestSchema, create(GetStatusRequestSchema, req))),
      (bytes: Buffer) => fromBinary(GetStatusResponseSchema, bytes),
      {},
      (error, response) => {
        client.close();
        resolve({ response, error: error ?? undefined });
      },
    );
  });
}

/** A plain HTTP/1.1 request with node:http (no keep-alive agent, no HTTP/2 negotiation). */
function h1Request(
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; httpVersion: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: false,
        headers: { "content-type": "application/json" },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text,
            httpVersion: res.httpVersion,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

test("one port serves gRPC (grpc-js), Connect JSON over HTTP/1.1 and Connect over HTTP/2", async () => {
  const h = await startHarness();

  const viaGrpc = await grpcGetStatus(h.port);
  assert.equal(viaGrpc.error, undefined);
  assert.equal(viaGrpc.response?.name, "n1");
  assert.equal(viaGrpc.response?.writerEpoch, 7n);

  const viaH1 = await h1Request(h.port, "POST", "/lockstep.admin.v1.AdminService/GetStatus", "{}");
  assert.equal(viaH1.httpVersion, "1.1");
  assert.equal(viaH1.status, 200);
  assert.deepEqual(JSON.parse(viaH1.body), {
    name: "n1",
    kind: "sequencer",
    role: "active",
    writerEpoch: "7",
    pid: 42,
  });

  const viaH2 = await adminClient(h.port).getStatus({});
  assert.equal(viaH2.role, "active");
  assert.equal(viaH2.pid, 42);

  const viaConnectH1 = await adminClient(h.port, "127.0.0.1", { httpVersion: "1.1" }).getStatus({});
  assert.equal(viaConnectH1.writerEpoch, 7n);
});

test("the first bytes may arrive in several reads", async () => {
  const h = await startHarness();
  // A proxy that splits the client's first bytes (inside the HTTP/2 preface) into separate writes.
  const proxy = net.createServer((client) => {
    const upstream = net.connect(h.port, "127.0.0.1");
    upstream.setNoDelay(true);
    let first = true;
    client.on("data", async (chunk: Buffer) => {
      if (!first) {
        upstream.write(chunk);
        return;
      }
      first = false;
      client.pause();
      upstream.write(chunk.subarray(0, 5));
      await sleep(30);
      upstream.write(chunk.subarray(5, 12));
      await sleep(30);
      upstream.write(chunk.subarray(12));
      client.resume();
    });
    upstream.pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const proxyPort = (proxy.address() as net.AddressInfo).port;
  try {
    const viaH2 = await createNodeClient(AdminService, nodeBaseUrl(proxyPort)).getStatus({});
    assert.equal(viaH2.name, "n1");
    const viaH1 = await h1Request(proxyPort, "POST", "/lockstep.admin.v1.AdminService/GetStatus", "{}");
    assert.equal(viaH1.status, 200);
  } finally {
    proxy.close();
    await h.server.stop();
  }
});

test("GET /health is 200 when active and 503 with the reason otherwise", async () => {
  const h = await startHarness();
  const active = await h1Request(h.port, "GET", "/health");
  assert.equal(active.status, 200);
  assert.deepEqual(JSON.parse(active.body), { node: "n1", kind: "sequencer", status: "active" });

  for (const status of ["passive", "failed", "starting", "stopping"] as const) {
    h.health = { node: "n1", kind: "sequencer", status, reason: `because ${status}` };
    const res = await h1Request(h.port, "GET", "/health");
    assert.equal(res.status, 503, status);
    assert.match(String(res.headers["content-type"]), /application\/json/);
    assert.deepEqual(JSON.parse(res.body), {
      node: "n1",
      kind: "sequencer",
      status,
      reason: `because ${status}`,
    });
  }

  // The same endpoint over HTTP/2.
  const session = http2.connect(nodeBaseUrl(h.port));
  try {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const stream = session.request({ ":path": "/health" });
      let text = "";
      let code = 0;
      stream.on("response", (headers) => {
        code = Number(headers[":status"]);
      });
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        text += chunk;
      });
      stream.on("end", () => resolve({ status: code, body: text }));
      stream.on("error", reject);
    });
    assert.equal(status, 503);
    assert.equal(JSON.parse(body).reason, "because stopping");
  } finally {
    session.close();
  }

  assert.equal((await h1Request(h.port, "GET", "/nope")).status, 404);
});

test("a LockstepError reaches grpc-js with its gRPC code and Connect clients as a LockstepError", async () => {
  const h = await startHarness();
  h.status = () => {
    throw new LockstepError("SUBMISSION_ALREADY_IN_FLIGHT", { existingSubmissionId: "sub-1" });
  };

  const viaGrpc = await grpcGetStatus(h.port);
  assert.equal(viaGrpc.error?.code, grpc.status.ABORTED);
  assert.equal(
    viaGrpc.error?.details,
    "SUBMISSION_ALREADY_IN_FLIGHT: A submission with the same change id is already in flight (submission sub-1)",
  );
  assert.deepEqual(viaGrpc.error?.metadata.get("lockstep-error-code"), ["SUBMISSION_ALREADY_IN_FLIGHT"]);
  assert.deepEqual(viaGrpc.error?.metadata.get("lockstep-error-existing-submission-id"), ["sub-1"]);
  assert.equal(viaGrpc.error?.metadata.get("grpc-status-details-bin").length, 1);

  for (const httpVersion of ["2", "1.1"] as const) {
    const err = await adminClient(h.port, "127.0.0.1", { httpVersion })
      .getStatus({})
      .then(
        () => assert.fail("expected an error"),
        (e: unknown) => e,
      );
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.Aborted);
    const rebuilt = fromConnectError(err);
    assert.ok(rebuilt instanceof LockstepError, httpVersion);
    assert.equal(rebuilt.code, "SUBMISSION_ALREADY_IN_FLIGHT");
    assert.equal(rebuilt.retryable, true);
    assert.equal(rebuilt.remedy, "Wait for the completion of the in-flight submission before retrying.");
    assert.deepEqual(rebuilt.metadata, { existingSubmissionId: "sub-1" });
    assert.equal(
      rebuilt.message,
      "A submission with the same change id is already in flight (submission sub-1)",
    );
  }
});

test("other thrown errors become INTERNAL_ERROR; non-Lockstep errors are not rebuilt", async () => {
  const h = await startHarness();
  h.status = () => {
    throw new TypeError("boom");
  };
  const viaGrpc = await grpcGetStatus(h.port);
  assert.equal(viaGrpc.error?.code, grpc.status.INTERNAL);

  const err = await adminClient(h.port)
    .getStatus({})
    .catch((e: unknown) => e);
  assert.ok(err instanceof ConnectError);
  assert.equal(err.code, Code.Internal);
  assert.equal(fromConnectError(err)?.code, "INTERNAL_ERROR");
  assert.match(fromConnectError(err)?.message ?? "", /boom/);

  assert.equal(fromConnectError(new ConnectError("plain", Code.Unavailable)), undefined);
  assert.equal(fromConnectError(new Error("x")), undefined);
});

test("Shutdown answers first, then calls shutdown()", async () => {
  const h = await startHarness();
  await adminClient(h.port).shutdown({});
  await sleep(20);
  assert.equal(h.shutdowns, 1);
});

test("start() throws PORT_IN_USE when the port is taken", async () => {
  const h = await startHarness();
  const second = new NodeServer({
    node: "n2",
    port: h.port,
    logger: silentLogger(),
    health: () => h.health,
    routes: () => {},
  });
  await assert.rejects(second.start(), (err: unknown) => {
    assert.ok(err instanceof LockstepError);
    assert.equal(err.code, "PORT_IN_USE");
    assert.deepEqual(err.metadata, { port: String(h.port), node: "n2" });
    return true;
  });
  await second.stop();
});

test("a node bound to its host answers there only; the port stays free on other addresses", async () => {
  const h = await startHarness({ host: "127.0.0.9" });
  assert.equal((await adminClient(h.port, "127.0.0.9").getStatus({})).name, "n1");
  await assert.rejects(fetch(`http://127.0.0.1:${h.port}/health`), "nothing on 127.0.0.1");
  // Another node may use the same port on another address (another machine, in production).
  const beside = await startHarness({ port: h.port, host: "127.0.0.1" });
  assert.equal(beside.port, h.port);
});

test("start() throws HOST_NOT_LOCAL for an address of another machine", async () => {
  const server = new NodeServer({
    node: "n3",
    port: 0,
    host: "192.0.2.1", // TEST-NET-1 (RFC 5737): never an address of this machine
    logger: silentLogger(),
    health: () => ({ node: "n3", kind: "sequencer", status: "active" }),
    routes: () => {},
  });
  await assert.rejects(server.start(), (err: unknown) => {
    assert.ok(err instanceof LockstepError);
    assert.equal(err.code, "HOST_NOT_LOCAL");
    assert.deepEqual(err.metadata, { host: "192.0.2.1", node: "n3" });
    return true;
  });
  await server.stop();
});

test("stop() completes while clients hold open connections and an unfinished call", async () => {
  const h = await startHarness({ shutdownGraceMs: 300 });
  // An idle HTTP/2 connection with one finished call on it.
  assert.equal((await adminClient(h.port).getStatus({})).name, "n1");
  // An HTTP/2 session with a call whose request never ends.
  const session = http2.connect(nodeBaseUrl(h.port));
  session.on("error", () => {});
  const hanging = session.request({
    ":method": "POST",
    ":path": "/lockstep.admin.v1.AdminService/GetStatus",
    "content-type": "application/grpc",
    te: "trailers",
  });
  hanging.on("error", () => {});
  hanging.write(Buffer.from([0, 0, 0, 0]));
  // An idle HTTP/1.1 keep-alive connection, and a socket that never sends a byte.
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port: h.port, path: "/health", agent }, (res) => {
        res.resume();
        res.on("end", resolve);
      })
      .on("error", reject);
  });
  const silent = net.connect(h.port, "127.0.0.1");
  silent.on("error", () => {});
  await sleep(50);

  const started = Date.now();
  await h.server.stop();
  assert.ok(Date.now() - started < 2000, `stop took ${Date.now() - started} ms`);
  await assert.rejects(adminClient(h.port).getStatus({}, { timeoutMs: 1000 }));
  agent.destroy();
  session.destroy();
  silent.destroy();
});
