import type { OwnTopology } from "../crypto/key-rotation.ts";
import type { SequencerClient } from "./sequencer-client.ts";

/** A sequencer-client member's own topology: changes go through the sequencer like any member's. */
export function clientOwnTopology(client: SequencerClient): OwnTopology {
  return {
    member: () => client.member,
    topology: () => client.topology(),
    submit: (transactions) => client.submitTopology(transactions),
    awaitEffective: (at) => client.whenClean(at),
  };
}
