import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { fromConnectError } from "../common/connect-errors.ts";
import { ERRORS, type ErrorCodeName } from "../common/error-codes.ts";
import { LockstepError } from "../common/errors.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import type { ClientTlsIdentity } from "../common/tls-client.ts";
import type { ErrorDetail } from "../gen/lockstep/common/v1/error_pb.ts";
import { type SendBatchResponse, SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import type { SendBatchOutcome, SequencerTransport } from "./sequencer-transport.ts";
import { fetchTopology } from "./topology-bootstrap.ts";

/**
 * How often the connection to the sequencer is checked while the subscription is open. A sequencer
 * whose site is cut off sends nothing, not even a close: without this the member would wait on a
 * dead stream indefinitely, and an old writer at a cut-off site would not learn, when the link comes
 * back, that the sequencer now refuses it (docs/operations.md "What the fencing guarantees").
 */
const SEQUENCER_PING_MS = 5_000;

/**
 * SequencerTransport over Connect (gRPC): RPC plumbing and error classification only. Every
 * failure becomes a LockstepError (sequencerCallError); everything else is the client's.
 */
export function grpcSequencerTransport(
  sequencerUrl: string,
  clientTls?: ClientTlsIdentity,
): SequencerTransport {
  const rpc: Client<typeof SequencerService> = createNodeClient(SequencerService, sequencerUrl, {
    pingIntervalMs: SEQUENCER_PING_MS,
    // The member's own certificate under mutual TLS, whichever nodes share the process.
    ...(clientTls ? { clientTls } : {}),
  });
  const call = <T>(fn: () => Promise<T>): Promise<T> => callSequencer(sequencerUrl, fn);
  return {
    getMemberEvent: (member, timestamp) => call(() => rpc.getMemberEvent({ member, timestamp })),
    getTopology: (asOf) => call(() => fetchTopology(rpc, asOf)),
    registerMember: (request) => call(() => rpc.registerMember(request)),
    async *subscribe(request, { signal, onConnected }) {
      try {
        for await (const response of rpc.subscribe(request, { signal, onHeader: onConnected }))
          yield response.events;
      } catch (error) {
        throw sequencerCallError(error, sequencerUrl);
      }
    },
    sendBatch: (signed) => sendBatchOutcome(sequencerUrl, () => rpc.sendBatch({ signed })),
    send: async (request) => {
      await call(() => rpc.send(request));
    },
    acknowledge: async (request, signal) => {
      await call(() => rpc.acknowledge(request, { signal }));
    },
    submitTopology: (request) => call(() => rpc.submitTopology(request)),
  };
}

/** The sequencer's own errors as it threw them; other RPC failures as SEQUENCER_UNAVAILABLE. */
export function sequencerCallError(error: unknown, sequencerUrl: string): unknown {
  const remote = fromConnectError(error);
  if (remote) return remote;
  if (error instanceof ConnectError) {
    return new LockstepError(
      "SEQUENCER_UNAVAILABLE",
      { url: sequencerUrl, reason: error.message },
      { cause: error },
    );
  }
  return error;
}

/** Runs a unary call, mapping its failure with sequencerCallError. */
async function callSequencer<T>(sequencerUrl: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw sequencerCallError(error, sequencerUrl);
  }
}

/** A SendBatch call's outcome: one LockstepError or null per submission, or "unsupported". */
export async function sendBatchOutcome(
  sequencerUrl: string,
  call: () => Promise<SendBatchResponse>,
): Promise<SendBatchOutcome> {
  try {
    const response = await call();
    return response.results.map((result) => (result.error ? fromErrorDetail(result.error) : null));
  } catch (error) {
    if (error instanceof ConnectError && error.code === Code.Unimplemented) return "unsupported";
    throw sequencerCallError(error, sequencerUrl);
  }
}

/** The LockstepError the sequencer refused one submission with (as fromConnectError for a Send). */
export function fromErrorDetail(detail: ErrorDetail): LockstepError {
  if (!ERRORS.has(detail.code as ErrorCodeName)) {
    return new LockstepError("INTERNAL_ERROR", {
      details: `the sequencer refused the submission with ${detail.code}: ${detail.message}`,
    });
  }
  const error = new LockstepError(detail.code as ErrorCodeName, detail.metadata);
  // Keep the server's wording: it rendered the same templates, possibly from a newer registry.
  error.message = detail.message;
  return error;
}
