import { isIP } from "node:net";
import tls from "node:tls";
import { fromConnectError } from "./connect-errors.ts";
import { LockstepError } from "./errors.ts";
import { clientTlsOptions, dialedOrigins } from "./tls-client.ts";

/**
 * OpenSSL's and node's codes for a certificate the client does not accept, and for the alerts a node
 * sends when it does not accept the client's (client-auth).
 */
const TLS_FAILURES =
  /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_(GET|VERIFY)_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$)/;

/** A call's failure that only says the connection went away (no TLS reason). */
function connectionLost(error: unknown): boolean {
  const cause = (error as { cause?: { code?: unknown } } | undefined)?.cause;
  const message = error instanceof Error ? error.message : "";
  return (
    cause?.code === "ECONNRESET" || /stream closed with error code (CANCEL|INTERNAL_ERROR)/.test(message)
  );
}

/**
 * TLS_HANDSHAKE_FAILED for a call that failed at the TLS handshake, with the TLS reason; undefined
 * for any other failure. Under TLS 1.3 a node checks the client's certificate after the client's
 * last handshake message, so a refused client often sees only its connection reset while it already
 * sends its first request: then each https node this process dialed is asked again with a bare
 * handshake that sends nothing, which receives the node's alert (e.g. unknown CA) instead.
 */
export async function tlsHandshakeFailure(error: unknown): Promise<LockstepError | undefined> {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (typeof cause?.code === "string" && TLS_FAILURES.test(cause.code))
    return failed(`${String(cause.message)} (${cause.code})`, error);
  if (!connectionLost(error)) return undefined;
  for (const origin of dialedOrigins()) {
    const reason = await probe(origin);
    if (reason) return failed(`${origin}: ${reason}`, error);
  }
  return undefined;
}

function failed(reason: string, cause: unknown): LockstepError {
  return new LockstepError("TLS_HANDSHAKE_FAILED", { reason }, { cause });
}

/** The TLS reason the node at `origin` refuses this process's connections for, or undefined. */
function probe(origin: string, timeoutMs = 2000): Promise<string | undefined> {
  const url = new URL(origin);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return new Promise((resolve) => {
    let options: tls.ConnectionOptions;
    try {
      options = clientTlsOptions();
    } catch {
      resolve(undefined);
      return;
    }
    const socket = tls.connect({
      ...options,
      host,
      port: Number(url.port || 443),
      ALPNProtocols: ["h2"],
      ...(isIP(host) ? {} : { servername: host }),
    });
    const done = (reason: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(reason);
    };
    // The node's first HTTP/2 frames: it accepted us, so TLS is not what failed.
    socket.once("data", () => done(undefined));
    socket.once("error", (err: NodeJS.ErrnoException) =>
      done(err.code && TLS_FAILURES.test(err.code) ? `${err.message} (${err.code})` : undefined),
    );
    // Closed after the handshake before a single frame: what a node does with a client certificate
    // it refuses under TLS 1.3 (its alert does not surface in node's client as an error).
    socket.once("close", () =>
      done(
        socket.authorized
          ? "the node closed the connection right after the handshake: it does not accept this client's certificate (one its CA did not issue, or none under client-auth: require)"
          : undefined,
      ),
    );
    const timer = setTimeout(() => done(undefined), timeoutMs);
  });
}

/**
 * Why a node that did not answer is up all the same: it refused our admin token
 * (ADMIN_UNAUTHENTICATED), or the TLS handshake failed (it refuses our certificate, or we do not
 * trust its). Undefined for an outage. Probes that would otherwise take such a node for stopped or
 * down (skipping the checks and holds that need it) throw this instead, so the operator gets the
 * refusal and its remedy.
 */
export async function refusalNotOutage(error: unknown): Promise<LockstepError | undefined> {
  const refused = fromConnectError(error);
  if (refused?.code === "ADMIN_UNAUTHENTICATED") return refused;
  return tlsHandshakeFailure(error);
}
