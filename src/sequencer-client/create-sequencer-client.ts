import { grpcSequencerTransport } from "./grpc-sequencer-transport.ts";
import type { SequencerClient, SequencerClientOptions } from "./sequencer-client.ts";
import { SequencerClientRuntime } from "./sequencer-client-runtime.ts";

/** The sequencer client over Connect (gRPC), the only transport so far. No I/O until register() or start(). */
export function createSequencerClient(options: SequencerClientOptions): SequencerClient {
  return new SequencerClientRuntime(grpcSequencerTransport(options.sequencerUrl, options.clientTls), options);
}
