import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError, type ConnectRouterOptions, createConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  type connectNodeAdapter,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";

type AdapterOptions = Parameters<typeof connectNodeAdapter>[0];
type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * connectNodeAdapter's request handler (connect-node 2.1), with one change: a request body that is
 * not valid protobuf is answered INVALID_ARGUMENT instead of INTERNAL. connect-es reports it as
 * INTERNAL ("parse binary: …", protocol/serialization.js), as grpc-java does, though it is the
 * client's fault: connect-go, and connect-es itself for malformed JSON, say INVALID_ARGUMENT, and
 * INTERNAL is kept for our own bugs (docs/security.md "Hostile input"). The parse runs before any
 * interceptor, so the answer is rewritten on its way out, in each protocol's form.
 */
export function connectHandler(options: AdapterOptions): (req: NodeRequest, res: NodeResponse) => void {
  const router = createConnectRouter({
    ...(options as ConnectRouterOptions),
    acceptCompression: options.acceptCompression ?? [compressionGzip, compressionBrotli],
  });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) paths.set(handler.requestPath, handler);
  return (req, res) => {
    const handler = paths.get(req.url?.split("?", 2)[0] ?? "");
    if (!handler) {
      options.fallback?.(req as never, res as never);
      return;
    }
    const uReq = universalRequestFromNodeRequest(
      req as never,
      res as never,
      undefined,
      options.contextValues?.(req as never),
    );
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(remapParseError(uRes), res as never))
      .catch((reason) => {
        // A client that went away; anything else would be logged by connect-node too.
        if (ConnectError.from(reason).code !== Code.Aborted)
          console.error(
            `handler for rpc ${handler.method.name} of ${handler.service.typeName} failed`,
            reason,
          );
      });
  };
}

const PARSE_BINARY = "parse binary:";
const JSON_TYPES = /^application\/(connect\+)?json/;

/** The response with a "parse binary" INTERNAL turned into INVALID_ARGUMENT; others unchanged. */
function remapParseError(res: UniversalServerResponse): UniversalServerResponse {
  const body = res.body;
  if (!body) return res;
  const out: UniversalServerResponse = { ...res };
  const contentType = res.header?.get("content-type") ?? "";
  out.body = (async function* () {
    fixGrpcStatus(res.header);
    for await (let chunk of body) {
      // Connect unary: an error is the whole (JSON) body, with its HTTP status.
      if (res.status === 500 && JSON_TYPES.test(contentType)) {
        const fixed = fixConnectError(chunk, 0);
        if (fixed) {
          out.status = 400;
          chunk = fixed;
          // The headers go out after the first chunk (universalResponseToNodeResponse): still ours.
          if (res.header?.has("content-length")) res.header.set("content-length", String(fixed.length));
        }
      }
      // Connect streaming: the end-of-stream envelope (flag 2, uncompressed) carries the error.
      if (res.status === 200 && contentType.startsWith("application/connect+") && chunk[0] === 2)
        chunk = fixConnectError(chunk, 5) ?? chunk;
      fixGrpcStatus(res.header);
      yield chunk;
    }
    // gRPC: grpc-status in the trailers (or the headers of a trailers-only answer). gRPC-web, which
    // no Lockstep client speaks, keeps connect-es's INTERNAL.
    fixGrpcStatus(res.trailer);
  })();
  return out;
}

function fixConnectError(chunk: Uint8Array, offset: number): Uint8Array | undefined {
  let parsed: { code?: string; message?: string; error?: { code?: string; message?: string } };
  try {
    parsed = JSON.parse(Buffer.from(chunk.subarray(offset)).toString("utf8"));
  } catch {
    return undefined;
  }
  const error = offset === 0 ? parsed : parsed.error;
  if (error?.code !== "internal" || !error.message?.startsWith(PARSE_BINARY)) return undefined;
  error.code = "invalid_argument";
  const json = Buffer.from(JSON.stringify(parsed));
  if (offset === 0) return json;
  const head = Buffer.alloc(5);
  head.writeUInt8(chunk[0] as number, 0);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

function fixGrpcStatus(headers: Headers | undefined): void {
  if (headers?.get("grpc-status") !== String(Code.Internal)) return;
  let message = headers.get("grpc-message") ?? "";
  try {
    message = decodeURIComponent(message);
  } catch {
    // left encoded: then it is not ours
  }
  if (message.startsWith(PARSE_BINARY)) headers.set("grpc-status", String(Code.InvalidArgument));
}
