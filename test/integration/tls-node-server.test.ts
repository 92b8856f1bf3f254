import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { validateConfig } from "../../src/common/config.ts";
import { configNodes } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { silentLogger } from "../../src/common/logging.ts";
import { createNodeClient } from "../../src/common/rpc-client.ts";
import { configureClientTls } from "../../src/common/tls-client.ts";
import { autoTlsPaths } from "../../src/common/tls-config.ts";
import { ensureAutoTls } from "../../src/common/tls-issuer.ts";
import type { ClientAuth } from "../../src/common/tls-schema.ts";
import {
  AdminService,
  GetStatusRequestSchema,
  type GetStatusResponse,
  GetStatusResponseSchema,
} from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import { adminServiceRoutes } from "../../src/node/admin-service.ts";
import { NodeServer } from "../../src/node/node-server.ts";
import { callPeer, type PeerIdentity } from "../../src/node/tls-peer.ts";

// NodeServer with TLS, in this process, with certificates Lockstep issues (`tls: auto`): one port
// serves gRPC and Connect over HTTP/2 and Connect JSON over HTTP/1.1 (curl); client certificates are
// checked per client-auth; a certificate of another CA and a cleartext client are refused.

const dirs: string[] = [];
const servers: NodeServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A network config with `tls: auto` in a fresh data dir, its CA and certificates issued. */
async function issuedNetwork() {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-tls-"));
  dirs.push(dir);
  const config = validateConfig({
    "data-dir": join(dir, "data"),
    tls: "auto",
    synchronizer: { id: "sync1", sequencer: { name: "n1", port: 1 }, mediator: { name: "m1", port: 2 } },
  });
  const certificates = await ensureAutoTls(config);
  return { config, certificates, paths: autoTlsPaths(config["data-dir"]) };
}

const net1 = await issuedNetwork();
/** Another network's CA and certificates: never trusted by net1's nodes. */
const other = await issuedNetwork();
const pem = (path: string) => readFileSync(path);

async function startTlsServer(
  clientAuth: ClientAuth,
): Promise<{ port: number; peers: (PeerIdentity | undefined)[] }> {
  const peers: (PeerIdentity | undefined)[] = [];
  const recordPeer: Interceptor = (next) => async (req) => {
    peers.push(callPeer(req.contextValues));
    return next(req);
  };
  const n1 = net1.paths.node("n1");
  const server = new NodeServer({
    node: "n1",
    port: 0,
    logger: silentLogger(),
    health: () => ({ node: "n1", kind: "sequencer", status: "active" }),
    routes: adminServiceRoutes({
      status: () => ({ name: "n1", kind: "sequencer", role: "active", writerEpoch: 7n, pid: 42 }),
      shutdown: () => {},
    }),
    interceptors: [recordPeer],
    tls: { cert: pem(n1.cert), key: pem(n1.key), ca: pem(net1.paths.ca.cert), clientAuth },
  });
  servers.push(server);
  return { port: await server.start(), peers };
}

function grpcGetStatus(
  port: number,
  credentials: grpc.ChannelCredentials,
): Promise<{ response?: GetStatusResponse; error?: grpc.ServiceError }> {
  // The name checked against the certificate (an IP as TLS server name is deprecated, RFC 6066).
  const client = new grpc.Client(`127.0.0.1:${port}`, credentials, {
    "grpc.ssl_target_name_override": "localhost",
  });
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/lockstep.admin.v1.AdminService/GetStatus",
      (req: MessageInitShape<typeof GetStatusRequestSchema>) =>
        Buffer.from(toBinary(GetStatusRequestSchema, create(GetStatusRequestSchema, req))),
      (bytes: Buffer) => fromBinary(GetStatusResponseSchema, bytes),
      {},
      { deadline: Date.now() + 10_000 },
      (error, response) => {
        client.close();
        resolve({ response, error: error ?? undefined });
      },
    );
  });
}

const curl = promisify(execFile);

/** curl over HTTP/1.1 (`--http1.1`), as an operator would call Connect's JSON protocol. */
function curlJson(port: number, path: string, extra: string[] = []) {
  return curl("curl", [
    "-sS",
    "--http1.1",
    "--max-time",
    "10",
    "--cacert",
    net1.paths.ca.cert,
    ...extra,
    "-H",
    "content-type: application/json",
    "-d",
    "{}",
    "-w",
    "\\n%{http_version} %{http_code}",
    `https://127.0.0.1:${port}${path}`,
  ]);
}

/** An https GET that presents `cert` (or none); resolves with the status or rejects with the TLS error. */
function httpsGet(port: number, cert?: { cert: string; key: string }): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      {
        host: "127.0.0.1",
        port,
        path: "/health",
        agent: false,
        ca: pem(net1.paths.ca.cert),
        ...(cert ? { cert: pem(cert.cert), key: pem(cert.key) } : {}),
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
  });
}

test("issued files are owner-only and carry the node's names", () => {
  assert.equal(statSync(net1.paths.dir).mode & 0o777, 0o700);
  for (const c of net1.certificates) {
    assert.equal(statSync(c.key).mode & 0o777, 0o600, c.key);
    assert.equal(statSync(c.cert).mode & 0o777, 0o600, c.cert);
  }
  const n1 = net1.certificates.find((c) => c.name === "n1");
  assert.ok(n1?.subjectAltNames.includes("IP:127.0.0.1"));
  assert.ok(n1?.subjectAltNames.includes("DNS:localhost"));
  assert.ok(n1?.subjectAltNames.includes("URI:urn:lockstep:node:n1"));
});

test("over TLS one port serves gRPC (grpc-js), Connect over HTTP/2 and Connect JSON over HTTP/1.1 (curl)", async () => {
  const { port } = await startTlsServer("none");

  const viaGrpc = await grpcGetStatus(port, grpc.credentials.createSsl(pem(net1.paths.ca.cert)));
  assert.equal(viaGrpc.error, undefined);
  assert.equal(viaGrpc.response?.writerEpoch, 7n);

  configureClientTls(net1.config);
  const url = `https://127.0.0.1:${port}`;
  assert.equal((await createNodeClient(AdminService, url).getStatus({})).pid, 42);
  assert.equal((await createNodeClient(AdminService, url, { httpVersion: "1.1" }).getStatus({})).pid, 42);

  const { stdout } = await curlJson(port, "/lockstep.admin.v1.AdminService/GetStatus");
  const [body, status] = stdout.split("\n");
  assert.equal(status, "1.1 200");
  assert.deepEqual(JSON.parse(body as string), {
    name: "n1",
    kind: "sequencer",
    role: "active",
    writerEpoch: "7",
    pid: 42,
  });
  const health = await curl("curl", [
    "-sS",
    "--cacert",
    net1.paths.ca.cert,
    `https://127.0.0.1:${port}/health`,
  ]);
  assert.equal(JSON.parse(health.stdout).status, "active");
});

test("a cleartext client to a TLS port fails: HTTP/1.1 and HTTP/2 with prior knowledge", async () => {
  const { port } = await startTlsServer("none");
  await assert.rejects(
    new Promise((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/health", agent: false }, resolve);
      req.on("error", reject);
    }),
    (err: NodeJS.ErrnoException) => ["ECONNRESET", "HPE_INVALID_CONSTANT", "EPROTO"].includes(err.code ?? ""),
  );
  const viaGrpc = await grpcGetStatus(port, grpc.credentials.createInsecure());
  assert.equal(viaGrpc.response, undefined);
  assert.equal(viaGrpc.error?.code, grpc.status.UNAVAILABLE);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  await assert.rejects(
    new Promise((resolve, reject) => {
      session.on("error", reject);
      session.on("close", () => reject(new Error("session closed")));
      const stream = session.request({ ":path": "/health" });
      stream.on("error", reject);
      stream.on("close", () => reject(new Error("stream closed")));
      stream.on("response", resolve);
    }),
  );
  session.destroy();
});

test("client-auth require: the network's certificates pass and name their holder; none or another CA's fail the handshake", async () => {
  const { port, peers } = await startTlsServer("require");

  // The CLI's client certificate (tls: auto issues it): an admin client.
  configureClientTls(net1.config);
  assert.equal((await createNodeClient(AdminService, `https://127.0.0.1:${port}`).getStatus({})).pid, 42);
  assert.equal(peers.at(-1)?.admin, true);
  assert.equal(peers.at(-1)?.commonName, "lockstep-admin");

  // A node's certificate names the node.
  const m1 = net1.paths.node("m1");
  const asNode = await grpcGetStatus(
    port,
    grpc.credentials.createSsl(pem(net1.paths.ca.cert), pem(m1.key), pem(m1.cert)),
  );
  assert.equal(asNode.error, undefined);
  assert.equal(peers.at(-1)?.node, "m1");
  assert.equal(peers.at(-1)?.admin, false);
  assert.match(peers.at(-1)?.fingerprint256 ?? "", /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

  const seen = peers.length;
  // A certificate another CA issued, with the same node name: refused at the handshake.
  const foreign = other.paths.node("m1");
  const viaForeign = await grpcGetStatus(
    port,
    grpc.credentials.createSsl(pem(net1.paths.ca.cert), pem(foreign.key), pem(foreign.cert)),
  );
  assert.equal(viaForeign.error?.code, grpc.status.UNAVAILABLE);
  await assert.rejects(httpsGet(port, other.paths.client), /certificate|alert|ECONNRESET|socket hang up/i);
  // No certificate at all.
  await assert.rejects(httpsGet(port), /certificate|alert|ECONNRESET|socket hang up/i);
  const curlNoCert = await curlJson(port, "/health").then(
    () => "accepted",
    (err: { stderr: string }) => err.stderr,
  );
  assert.match(curlNoCert, /certificate required/);
  assert.equal(peers.length, seen, "no refused client reached a handler");
});

test("client-auth optional: no certificate is fine, another CA's is refused", async () => {
  const { port, peers } = await startTlsServer("optional");
  assert.equal(await httpsGet(port), 200);
  const { stdout } = await curlJson(port, "/lockstep.admin.v1.AdminService/GetStatus");
  assert.match(stdout, /1\.1 200$/);
  assert.equal(peers.at(-1), undefined);
  assert.equal(await httpsGet(port, net1.paths.node("m1")), 200);
  await assert.rejects(httpsGet(port, other.paths.node("m1")), /ECONNRESET|socket hang up|alert/i);
  const viaForeign = await grpcGetStatus(
    port,
    grpc.credentials.createSsl(
      pem(net1.paths.ca.cert),
      pem(other.paths.client.key),
      pem(other.paths.client.cert),
    ),
  );
  assert.equal(viaForeign.error?.code, grpc.status.UNAVAILABLE);
});

test("a certificate that no longer fits is issued again; without the CA key what is there is kept", async () => {
  const net = await issuedNetwork();
  const at = (address: string) =>
    validateConfig({
      "data-dir": net.config["data-dir"],
      tls: "auto",
      synchronizer: {
        id: "sync1",
        sequencer: { name: "n1", port: 1, address },
        mediator: { name: "m1", port: 2 },
      },
    });
  const moved = at("n1.example.net");
  const n1 = (config: typeof moved) => configNodes(config).filter((n) => n.name === "n1");
  const again = await ensureAutoTls(moved, { nodes: n1(moved) });
  const reissued = again.find((c) => c.name === "n1");
  assert.equal(reissued?.issued, true);
  assert.match(reissued?.reason ?? "", /missing DNS:n1\.example\.net/);
  assert.ok(reissued?.subjectAltNames.includes("DNS:n1.example.net"));
  assert.equal(again.find((c) => c.name === "ca")?.issued, false, "the CA stays");

  // Another machine's copy without the CA key: a node starts with what it was given.
  rmSync(net.paths.ca.key);
  const elsewhere = at("other.example.net");
  const kept = await ensureAutoTls(elsewhere, { nodes: n1(elsewhere), clientIfPossible: true });
  assert.equal(kept.find((c) => c.name === "n1")?.issued, false);
  assert.match(kept.find((c) => c.name === "n1")?.reason ?? "", /not re-issued: no CA key here/);
  // A certificate that is not there cannot be made without the key: the error names the file.
  rmSync(net.paths.node("m1").cert);
  await assert.rejects(
    ensureAutoTls(elsewhere),
    (err: unknown) => isLockstepError(err, "TLS_FILES_INVALID") && err.message.includes(net.paths.ca.key),
  );
});
