import { END_OF_TIME } from "../common/time.ts";
import type { KeyPair } from "../crypto/keys.ts";
import {
  memberKeys,
  type SignedTopologyTransaction,
  type SynchronizerParametersValues,
  type TopologyMapping,
  type TopologyState,
} from "../crypto/topology.ts";

/**
 * The topology the sequencer issues itself, signed with its namespace key (the synchronizer's
 * namespace): its own MemberKeys and the SynchronizerParameters on first activation, later only
 * what changed (a rotated signing key, edited parameters). Pure: the same state and inputs give
 * nothing to do on a restart, which is what makes bootstrapping idempotent.
 */
export function bootstrapTransactions(args: {
  topology: TopologyState;
  sequencerId: string;
  namespaceKey: KeyPair;
  signingKey: KeyPair;
  parameters: SynchronizerParametersValues;
}): SignedTopologyTransaction[] {
  const { topology, sequencerId, namespaceKey, signingKey, parameters } = args;
  const out: SignedTopologyTransaction[] = [];
  const keys = topology.signingKeysOf(sequencerId, END_OF_TIME);
  if (!keys.some((k) => k.fingerprint === signingKey.fingerprint)) {
    const mapping = memberKeys(sequencerId, namespaceKey, [signingKey]);
    out.push(issue(topology, mapping, namespaceKey));
  }
  const issued = topology.nextSerial({ type: "SynchronizerParameters", ...parameters }) > 1;
  if (!issued || !sameParameters(topology.parameters(END_OF_TIME), parameters)) {
    out.push(issue(topology, { type: "SynchronizerParameters", ...parameters }, namespaceKey));
  }
  return out;
}

/**
 * The MediatorDomainState that adds `mediator` to the synchronizer's mediators, computed on the
 * topology that already has the mediator's MemberKeys; undefined if it is listed already.
 */
export function addMediatorTransaction(
  topology: TopologyState,
  mediator: string,
  namespaceKey: KeyPair,
): SignedTopologyTransaction | undefined {
  const current = topology.mediators(END_OF_TIME);
  if (current.includes(mediator)) return undefined;
  return issue(topology, { type: "MediatorDomainState", mediators: [...current, mediator] }, namespaceKey);
}

function issue(topology: TopologyState, mapping: TopologyMapping, key: KeyPair): SignedTopologyTransaction {
  return topology.issue(mapping, key);
}

function sameParameters(a: SynchronizerParametersValues, b: SynchronizerParametersValues): boolean {
  return (
    a.ledgerTimeRecordTimeToleranceMs === b.ledgerTimeRecordTimeToleranceMs &&
    a.participantResponseTimeoutMs === b.participantResponseTimeoutMs &&
    a.maxDeduplicationDurationMs === b.maxDeduplicationDurationMs
  );
}
