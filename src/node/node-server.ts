import { setMaxListeners } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { TLSSocket } from "node:tls";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { LOOPBACK } from "../common/loopback.ts";
import { adminAuthenticatedByCertificate } from "./admin-token.ts";
import { connectHandler } from "./connect-handler.ts";
import { errorInterceptor } from "./error-interceptor.ts";
import { type HealthReport, healthHttpStatus } from "./health.ts";
import { describePeer, type PeerIdentity, peerIdentityKey, socketPeerIdentity } from "./tls-peer.ts";
import { createTlsServer, type ServerTls, socketKey, unverifiedPresented } from "./tls-server.ts";

export interface NodeServerOptions {
  /** The node's name, for errors and logs. */
  node: string;
  /** 0 picks a free port; start() returns the actual one. */
  port: number;
  host?: string;
  routes: (router: ConnectRouter) => void;
  health: () => HealthReport;
  logger: Logger;
  /** How long stop() lets in-flight calls finish before cutting connections. */
  shutdownGraceMs?: number;
  /** Run inside the error interceptor, so a LockstepError they throw reaches clients with its code. */
  interceptors?: Interceptor[];
  /** Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) instead of cleartext; see tls-server.ts. */
  tls?: ServerTls;
  /**
   * The largest request message read, in bytes: each message of a stream, and a whole unary
   * body (binary or JSON, HTTP/2 or HTTP/1.1). Larger ones get RESOURCE_EXHAUSTED before the
   * handler runs. Default DEFAULT_READ_MAX_BYTES; nodes pass their kind's (MESSAGE_LIMITS).
   */
  readMaxBytes?: number;
}

/** gRPC's usual default for inbound messages (grpc-java/grpc-js maxReceiveMessageLength). */
export const DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Default inbound limit per node kind, raised by a node's `max-inbound-message-size` (Canton's key
 * of that name; docs/configuration.md). Participant and mediator requests are commands, queries and
 * admin calls: gRPC's 4 MiB. The sequencer takes SendBatch calls that coalesce up to 256 signed
 * submissions (send-coalescer.ts), each a confirmation request carrying a whole transaction that a
 * Ledger API command of up to 4 MiB produced: 64 MiB leaves room for several such at once.
 * No writeMaxBytes: what nodes send (active contracts, event batches) grows with the ledger and
 * goes to clients that set their own read limits; cutting it here would break a legitimate read.
 */
export const MESSAGE_LIMITS = {
  participant: DEFAULT_READ_MAX_BYTES,
  mediator: DEFAULT_READ_MAX_BYTES,
  sequencer: 64 * 1024 * 1024,
} as const;

/** The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

// connect-node does not export its request/response types; the fallback's parameters are them.
type Fallback = NonNullable<Parameters<typeof connectHandler>[0]["fallback"]>;
type NodeServerRequest = Parameters<Fallback>[0];
type NodeServerResponse = Parameters<Fallback>[1];

/**
 * One TCP port for everything a node serves: gRPC and Connect over cleartext HTTP/2 (prior
 * knowledge, as grpc-js clients use), Connect JSON over HTTP/1.1 (curl, fetch), and `GET /health`.
 * Node's http2 server cannot fall back to HTTP/1.1 without TLS, so we sniff the first bytes of
 * each connection and hand the socket to an HTTP/2 or an HTTP/1.1 server that share one handler.
 * With TLS, each socket goes to one secure server that offers both by ALPN (allowHTTP1).
 */
export class NodeServer {
  private readonly tcp = net.createServer({ pauseOnConnect: true }, (socket) => this.sniff(socket));
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly sockets = new Set<net.Socket>();
  /** HTTP/1.1 sockets with a request in progress; the others are idle and may be closed at once. */
  private readonly busyH1 = new Map<net.Socket, number>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** Sockets handed to HTTP/2: their session closes them gracefully. */
  private readonly h2Sockets = new Set<net.Socket>();
  /** With TLS: the server that takes each accepted socket, and its connections by remote address:port. */
  private readonly secure: http2.Http2SecureServer | undefined;
  private readonly secured = new Map<string, { socket: TLSSocket; peer: PeerIdentity | undefined }>();
  private readonly shutdown = new AbortController();
  private stopping: Promise<void> | undefined;
  private boundPort = 0;

  constructor(private readonly options: NodeServerOptions) {
    // Connect links every call's signal to this one; many concurrent calls are normal, not a leak.
    setMaxListeners(0, this.shutdown.signal);
    // connectNodeAdapter, but malformed protobuf answered INVALID_ARGUMENT (connect-handler.ts).
    const handler = connectHandler({
      routes: options.routes,
      interceptors: [errorInterceptor(options.logger), ...(options.interceptors ?? [])],
      // Aborts handler signals on stop() so that open server streams end instead of holding it up.
      shutdownSignal: this.shutdown.signal,
      fallback: (req, res) => this.fallback(req, res),
      contextValues: (req) => this.contextValues(req),
      readMaxBytes: options.readMaxBytes ?? DEFAULT_READ_MAX_BYTES,
    });
    this.h1 = http.createServer((req, res) => {
      this.trackH1(req.socket, res);
      lingerOnRefusedBody(req, res);
      handler(req, res);
    });
    this.h2 = http2.createServer({}, (req, res) => {
      reencodeGrpcMessage(res);
      handler(req, res);
    });
    this.watchSessions(this.h2);
    if (options.tls) {
      this.secure = createTlsServer(options.tls, (req, res) => {
        if (req.httpVersionMajor === 2) reencodeGrpcMessage(res as http2.Http2ServerResponse);
        else {
          this.trackH1(req.socket, res as unknown as http.ServerResponse);
          lingerOnRefusedBody(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse);
        }
        handler(req, res);
      });
      this.watchSessions(this.secure);
      this.secure.on("secureConnection", (socket: TLSSocket) => this.onSecure(socket));
      // A plaintext client, a failed handshake (a certificate of another CA): the client's problem.
      this.secure.on("tlsClientError", (err) => this.options.logger.debug({ err }, "tls handshake failed"));
    }
  }

  private watchSessions(server: http2.Http2Server | http2.Http2SecureServer): void {
    server.on("session", (session) => {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
      // A broken session is the client's problem; without a listener it would crash the node.
      session.on("error", (err) => this.options.logger.debug({ err }, "http2 session error"));
    });
  }

  /** A TLS handshake done: its client's identity, kept for the connection's calls (contextValues). */
  private onSecure(socket: TLSSocket): void {
    if (unverifiedPresented(socket)) {
      // client-auth optional: no certificate is fine, one the node's CA did not issue is not.
      this.options.logger.debug({ remote: socketKey(socket) }, "client certificate not verified");
      socket.destroy();
      return;
    }
    const key = socketKey(socket);
    const peer = socketPeerIdentity(socket);
    this.secured.set(key, { socket, peer });
    // Who is at the other end, by its certificate: each node's own calls present its own.
    this.options.logger.debug({ remote: key, peer: describePeer(peer) }, "tls client connected");
    if (socket.alpnProtocol === "h2") this.h2Sockets.add(socket as unknown as net.Socket);
    socket.once("close", () => {
      this.secured.delete(key);
      this.h2Sockets.delete(socket as unknown as net.Socket);
    });
  }

  private contextValues(req: NodeServerRequest): ContextValues {
    const values = createContextValues();
    const peer = this.secure && this.secured.get(socketKey(req.socket))?.peer;
    if (peer) values.set(peerIdentityKey, peer);
    // A verified admin client certificate stands for the admin token (admin-token.ts reads this).
    if (peer?.admin) values.set(adminAuthenticatedByCertificate, true);
    return values;
  }

  get port(): number {
    return this.boundPort;
  }

  start(): Promise<number> {
    const { port, host = LOOPBACK, node } = this.options;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        if (err.code === "EADDRINUSE")
          reject(new LockstepError("PORT_IN_USE", { port, node }, { cause: err }));
        // An address of another machine, or a name this one cannot resolve: started on the wrong machine.
        else if (err.code === "EADDRNOTAVAIL" || err.code === "ENOTFOUND")
          reject(new LockstepError("HOST_NOT_LOCAL", { host, node }, { cause: err }));
        else reject(err);
      };
      this.tcp.once("error", onError);
      this.tcp.listen(port, host, () => {
        this.tcp.off("error", onError);
        this.tcp.on("error", (err) => this.options.logger.error({ err }, "server error"));
        this.boundPort = (this.tcp.address() as net.AddressInfo).port;
        resolve(this.boundPort);
      });
    });
  }

  /** Graceful: stop accepting, finish in-flight calls for up to shutdownGraceMs, then cut what is left. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    if (!this.tcp.listening) return;
    const closed = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    this.shutdown.abort(new ConnectError(`node ${this.options.node} is stopping`, Code.Unavailable));
    for (const session of this.sessions) session.close();
    for (const socket of this.sockets) if (!this.isBusy(socket)) socket.destroy();
    const grace = setTimeout(() => {
      for (const session of this.sessions) session.destroy();
      for (const socket of this.sockets) socket.destroy();
    }, this.options.shutdownGraceMs ?? 1000);
    await closed;
    clearTimeout(grace);
  }

  /** Reads until the first bytes decide the protocol, puts them back and hands the socket over. */
  private sniff(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => {
      this.sockets.delete(socket);
      this.busyH1.delete(socket);
      this.h2Sockets.delete(socket);
    });
    if (this.stopping) {
      socket.destroy();
      return;
    }
    if (this.secure) {
      // TLS: ALPN picks HTTP/2 or HTTP/1.1 during the handshake; no bytes to sniff.
      socket.on("error", () => socket.destroy());
      this.secure.emit("connection", socket);
      return;
    }
    let received = Buffer.alloc(0);
    const onError = () => socket.destroy();
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const n = Math.min(received.length, H2_PREFACE.length);
      const isH2 = received.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      // A partial read that still matches the preface: wait for more.
      if (isH2 && n < H2_PREFACE.length) return;
      socket.off("data", onData);
      socket.off("error", onError);
      socket.pause();
      socket.unshift(received);
      if (this.stopping) socket.destroy();
      else if (isH2) {
        this.h2Sockets.add(socket);
        this.h2.emit("connection", socket);
      } else {
        this.h1.emit("connection", socket);
        // The http parser reads new bytes from the handle itself; the put-back ones need the stream flowing.
        socket.resume();
      }
    };
    socket.on("error", onError);
    socket.on("data", onData);
    socket.resume();
  }

  private trackH1(socket: net.Socket, res: http.ServerResponse): void {
    this.busyH1.set(socket, (this.busyH1.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const left = (this.busyH1.get(socket) ?? 1) - 1;
      if (left > 0) this.busyH1.set(socket, left);
      else this.busyH1.delete(socket);
      // Keep-alive would hold the connection open after the last response of a stopping server.
      if (left <= 0 && this.stopping) socket.destroy();
    });
    if (this.stopping) res.setHeader("connection", "close");
  }

  /** HTTP/2 sockets belong to their session, which closes them; HTTP/1.1 ones are busy while a request runs. */
  private isBusy(socket: net.Socket): boolean {
    // With TLS the requests run on the TLS socket over this accepted one (none while it handshakes).
    const over = this.secure
      ? (this.secured.get(socketKey(socket))?.socket as net.Socket | undefined)
      : socket;
    return over !== undefined && (this.busyH1.has(over) || this.h2Sockets.has(over));
  }

  private fallback(req: NodeServerRequest, res: NodeServerResponse): void {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/health" && (req.method === "GET" || req.method === "HEAD")) {
      let status: number;
      let body: string;
      try {
        const report = this.options.health();
        status = healthHttpStatus(report);
        body = JSON.stringify(report);
      } catch (err) {
        this.options.logger.error({ err }, "health check failed");
        status = 503;
        body = JSON.stringify({ node: this.options.node, status: "failed", reason: String(err) });
      }
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      if (req.method === "HEAD") res.end();
      else res.end(body);
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  }
}

/** How much of a refused HTTP/1.1 body the node still reads (and drops) so its client gets the answer. */
const LINGER_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A body refused before it was read (over readMaxBytes by its content-length, a wrong content type):
 * Node closes the connection when such a response ends, and closing with unread bytes sends a reset,
 * which can discard the answer before the client (still writing) reads it — Apache's "lingering
 * close" problem. So the end of the response waits until the rest of the body was read and dropped,
 * up to LINGER_MAX_BYTES (then the connection is cut), or until the client goes.
 */
function lingerOnRefusedBody(req: http.IncomingMessage, res: http.ServerResponse): void {
  const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
  res.end = ((...args: unknown[]) => {
    if (req.complete || req.destroyed) return end(...args);
    let dropped = 0;
    const finish = () => {
      req.off("end", finish);
      req.off("close", finish);
      end(...args);
    };
    req.on("data", (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > LINGER_MAX_BYTES) req.socket.destroy();
    });
    req.once("end", finish);
    req.once("close", finish);
    req.resume();
    return res;
  }) as typeof res.end;
}

/**
 * connect-es percent-encodes grpc-message with encodeURIComponent, but grpc-js clients decode it with
 * decodeURI, which leaves reserved characters encoded ("CODE%3A message"). The gRPC spec only
 * requires encoding "%" and bytes outside 0x20-0x7E, which every decoder handles, so we re-encode.
 */
function reencodeGrpcMessage(res: http2.Http2ServerResponse): void {
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (trailers) => {
    const message = trailers["grpc-message"];
    if (typeof message === "string") {
      try {
        trailers["grpc-message"] = encodeGrpcMessage(decodeURIComponent(message));
      } catch {
        // not ours to fix: leave as sent
      }
    }
    addTrailers(trailers);
  };
}

function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
