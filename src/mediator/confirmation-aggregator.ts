import type { ErrorCodeName } from "../common/error-codes.ts";
import type { Micros } from "../common/time.ts";
import { msToMicros } from "../common/time.ts";
import type { PublicKeyInfo } from "../crypto/keys.ts";
import { verify } from "../crypto/keys.ts";
import type {
  ConfirmationRequest,
  ConfirmationResponse,
} from "../gen/lockstep/protocol/v1/confirmation_pb.ts";
import { confirmationResponseDigest, type ProtocolMessage } from "../protocol/confirmation-messages.ts";

/**
 * The mediator's aggregation of confirmations (docs/design.md §2 "Transactions", step 5): a deterministic
 * function of the sequenced events it is fed, in order, and of the topology at their timestamps.
 * No I/O and no clocks: time is the timestamp of the events observed. Replaying the same events
 * (after a crash, or a restore) yields the same verdicts, which is what makes restore-and-replay
 * of the mediator correct. Its state lives behind RequestStore: in memory here (tests), in the
 * mediator's database in mediator-store.ts, updated in the transaction that records the event.
 *
 * Rules:
 * - a request must be addressed to every informee's participant, and sent by the submitting
 *   participant it names;
 * - a request's confirming parties and their hosting participants are fixed from the topology at
 *   the request's timestamp; its deadline is that timestamp + participantResponseTimeout;
 * - a response counts only if its sender is the participant it names, hosts (at request time)
 *   every confirming party it answers for, and signed it with one of its signing keys;
 * - the first counted rejection rejects the request with its code and reason; approval needs an
 *   approving response for every confirming party;
 * - a party answers once: a response only for parties that have already approved is ignored;
 * - an event with a timestamp past the deadline times out a request still open (before that
 *   event is itself processed, so a response after the deadline is late);
 * - anything for a decided request (late, duplicate) is ignored.
 */

/** What the aggregator reads of the topology; TopologyState satisfies it. */
export interface AggregatorTopology {
  participantOf(party: string, at: Micros): string | undefined;
  signingKeysOf(member: string, at: Micros): readonly PublicKeyInfo[];
  parameters(at: Micros): { readonly participantResponseTimeoutMs: number };
}

export interface HostedParty {
  readonly party: string;
  readonly participant: string;
}

export interface OpenRequest {
  readonly requestId: Micros;
  readonly rootHash: Buffer;
  readonly deadline: Micros;
  /** Each confirming party with its hosting participant at the request's timestamp, sorted by party. */
  readonly hosts: readonly HostedParty[];
  /** Confirming parties with an approving response, sorted. */
  readonly approved: readonly string[];
  /** The informee participants (and the submitter), sorted: who receives the verdict. */
  readonly recipients: readonly string[];
}

export type VerdictOutcome =
  | { readonly kind: "approve" }
  | { readonly kind: "reject"; readonly code: string; readonly reason: string; readonly participant: string }
  | {
      readonly kind: "timeout";
      readonly code: typeof TIMEOUT_CODE;
      readonly reason: string;
      readonly unresponsiveParties: readonly string[];
    };

export interface DecidedVerdict {
  readonly requestId: Micros;
  readonly rootHash: Buffer;
  readonly outcome: VerdictOutcome;
  readonly recipients: readonly string[];
  /** The timestamp of the event that decided it. */
  readonly decidedAt: Micros;
}

/** One sequenced event as the aggregator sees it. */
export interface MediatorInput {
  readonly timestamp: Micros;
  readonly sender: string;
  /** Whom the sequencer delivered the event to (the mediator node always passes them). */
  readonly recipients?: readonly string[];
  /** Undefined for anything but a confirmation-protocol message (it still advances time). */
  readonly message?: ProtocolMessage;
}

/** A response as received, for the audit log: whether it counted, and why not. */
export interface ResponseRecord {
  readonly requestId: Micros;
  readonly receivedAt: Micros;
  readonly sender: string;
  readonly parties: readonly string[];
  readonly verdict: "approve" | "reject" | "none";
  readonly counted: boolean;
  readonly note?: string;
}

export interface RequestStore {
  /** Open requests whose deadline is before `at`, by request id. */
  expired(at: Micros): Promise<OpenRequest[]>;
  /** The open request, "decided", or undefined for a request the mediator never accepted. */
  lookup(requestId: Micros): Promise<OpenRequest | "decided" | undefined>;
  open(request: OpenRequest): Promise<void>;
  update(request: OpenRequest): Promise<void>;
  decide(verdict: DecidedVerdict): Promise<void>;
  recordResponse(record: ResponseRecord): Promise<void>;
}

export interface ProcessResult {
  /** Verdicts decided by this event, in the order decided (timeouts by request id first). */
  readonly verdicts: DecidedVerdict[];
  /** Why a message of this event was ignored, for the log. */
  readonly ignored?: string;
}

// Typed as registry codes, so that they cannot drift from error-codes.ts.
export const TIMEOUT_CODE = "MEDIATOR_SAYS_TX_TIMED_OUT" satisfies ErrorCodeName;
export const INVALID_MESSAGE_CODE: ErrorCodeName = "MEDIATOR_INVALID_MESSAGE";
export const MALFORMED_MESSAGE_CODE: ErrorCodeName = "MEDIATOR_RECEIVED_MALFORMED_MESSAGE";

/** Feeds one sequenced event to the aggregation; the caller persists the store with the event. */
export async function processMediatorEvent(
  store: RequestStore,
  topology: AggregatorTopology,
  input: MediatorInput,
): Promise<ProcessResult> {
  const verdicts: DecidedVerdict[] = [];
  for (const open of await store.expired(input.timestamp)) {
    const verdict = timeoutVerdict(open, input.timestamp);
    await store.decide(verdict);
    verdicts.push(verdict);
  }
  const message = input.message;
  if (message?.kind === "request") {
    const result = evaluateRequest(topology, input, message.message);
    if ("open" in result) await store.open(result.open);
    else if ("verdict" in result) {
      await store.decide(result.verdict);
      verdicts.push(result.verdict);
    } else return { verdicts, ignored: result.ignored };
  } else if (message?.kind === "response") {
    const response = message.message;
    const state = await store.lookup(response.requestId);
    const base = {
      requestId: response.requestId,
      receivedAt: input.timestamp,
      sender: input.sender,
      parties: [...response.confirmingParties],
      verdict: response.verdict.case ?? "none",
    } as const;
    if (state === undefined || state === "decided") {
      const note = state === undefined ? "unknown request" : "request already decided";
      await store.recordResponse({ ...base, counted: false, note });
      return { verdicts, ignored: `response of ${input.sender} for ${response.requestId}: ${note}` };
    }
    const result = evaluateResponse(state, topology, input, response);
    await store.recordResponse({ ...base, counted: !("ignored" in result), note: result.ignored });
    if ("ignored" in result) {
      return {
        verdicts,
        ignored: `response of ${input.sender} for ${response.requestId}: ${result.ignored}`,
      };
    }
    if (result.verdict) {
      await store.decide(result.verdict);
      verdicts.push(result.verdict);
    } else await store.update(result.state);
  }
  return { verdicts };
}

type RequestEvaluation = { open: OpenRequest } | { verdict: DecidedVerdict } | { ignored: string };

/** A request opens, or is rejected at once when it can never be approved, or is ignored. */
export function evaluateRequest(
  topology: AggregatorTopology,
  input: Pick<MediatorInput, "timestamp" | "sender" | "recipients">,
  request: ConfirmationRequest,
): RequestEvaluation {
  const at = input.timestamp;
  if (request.rootHash.length === 0) return { ignored: `request ${at} has no root hash` };
  const hostOf = (party: string) => topology.participantOf(party, at);
  const recipients = sortedUnique([
    input.sender,
    ...request.informees.map(hostOf).filter((p): p is string => p !== undefined),
  ]);
  const reject = (code: string, reason: string): RequestEvaluation => ({
    verdict: {
      requestId: at,
      rootHash: Buffer.from(request.rootHash),
      outcome: { kind: "reject", code, reason, participant: "" },
      recipients,
      decidedAt: at,
    },
  });
  if (request.submittingParticipant !== input.sender) {
    return reject(
      MALFORMED_MESSAGE_CODE,
      `the request names submitting participant ${request.submittingParticipant} but was sent by ${input.sender}`,
    );
  }
  const confirming = sortedUnique(request.confirmingParties);
  if (confirming.length === 0) return reject(MALFORMED_MESSAGE_CODE, "the request has no confirming parties");
  const informees = new Set(request.informees);
  const notInformees = confirming.filter((p) => !informees.has(p));
  if (notInformees.length > 0) {
    return reject(MALFORMED_MESSAGE_CODE, `confirming parties are not informees: ${notInformees.join(", ")}`);
  }
  // Every informee participant must have received the request, else it could never learn what the
  // verdict commits (Canton's mediator: "Missing root hash message for informee participants" →
  // MediatorError.MalformedMessage). The sender has it anyway (its receipt).
  if (input.recipients) {
    const delivered = new Set([input.sender, ...input.recipients]);
    const missing = recipients.filter((p) => !delivered.has(p));
    if (missing.length > 0) {
      return reject(
        MALFORMED_MESSAGE_CODE,
        `the request was not sent to the informee participants ${missing.join(", ")}`,
      );
    }
  }
  const hosts: HostedParty[] = [];
  const unhosted: string[] = [];
  for (const party of confirming) {
    const participant = hostOf(party);
    if (participant === undefined) unhosted.push(party);
    else hosts.push({ party, participant });
  }
  if (unhosted.length > 0) {
    return reject(
      INVALID_MESSAGE_CODE,
      `confirming parties are not hosted by any participant at ${at}: ${unhosted.join(", ")}`,
    );
  }
  const timeoutMs = topology.parameters(at).participantResponseTimeoutMs;
  return {
    open: {
      requestId: at,
      rootHash: Buffer.from(request.rootHash),
      deadline: at + msToMicros(timeoutMs),
      hosts,
      approved: [],
      recipients,
    },
  };
}

type ResponseEvaluation =
  | { state: OpenRequest; verdict?: DecidedVerdict; ignored?: undefined }
  | { ignored: string };

/** Applies a response to an open request: counts it (maybe deciding the request) or ignores it. */
export function evaluateResponse(
  request: OpenRequest,
  topology: AggregatorTopology,
  input: Pick<MediatorInput, "timestamp" | "sender">,
  response: ConfirmationResponse,
): ResponseEvaluation {
  if (response.participant !== input.sender) {
    return { ignored: `it names participant ${response.participant}` };
  }
  if (!request.rootHash.equals(response.rootHash))
    return { ignored: "its root hash differs from the request's" };
  if (response.confirmingParties.length === 0) return { ignored: "it answers for no party" };
  const hostOf = new Map(request.hosts.map((h) => [h.party, h.participant]));
  const foreign = response.confirmingParties.filter((p) => hostOf.get(p) !== input.sender);
  if (foreign.length > 0) {
    return {
      ignored: `the sender does not host confirming parties ${foreign.join(", ")} at the request's time`,
    };
  }
  if (!signatureVerifies(topology, input, response)) return { ignored: "its signature does not verify" };
  // A party answers once (Canton's ResponseAggregation: only pending confirming parties count;
  // "Ignoring … because it has already responded", a contradicting vote is ParticipantEquivocation):
  // an approval cannot be taken back by a later rejection, nor repeated.
  const responded = new Set(request.approved);
  if (response.confirmingParties.every((p) => responded.has(p))) {
    return { ignored: `its parties have already responded: ${response.confirmingParties.join(", ")}` };
  }
  const verdict = response.verdict;
  if (verdict.case === "reject") {
    const outcome = {
      kind: "reject",
      code: verdict.value.code,
      reason: verdict.value.reason,
      participant: input.sender,
    } as const;
    return { state: request, verdict: decided(request, outcome, input.timestamp) };
  }
  if (verdict.case !== "approve") return { ignored: "it carries no verdict" };
  const approved = sortedUnique([...request.approved, ...response.confirmingParties]);
  const state = { ...request, approved };
  if (approved.length === request.hosts.length) {
    return { state, verdict: decided(state, { kind: "approve" }, input.timestamp) };
  }
  return { state };
}

/** The timeout verdict of an open request, observed at `at` (past its deadline). */
export function timeoutVerdict(request: OpenRequest, at: Micros): DecidedVerdict {
  const approved = new Set(request.approved);
  const unresponsiveParties = request.hosts.map((h) => h.party).filter((p) => !approved.has(p));
  return decided(
    request,
    {
      kind: "timeout",
      code: TIMEOUT_CODE,
      reason: `no approval from ${unresponsiveParties.join(", ")} before the deadline ${request.deadline}`,
      unresponsiveParties,
    },
    at,
  );
}

/**
 * One of the sender's signing keys in force when the response was sequenced must verify the
 * signature. Not a key of the request's time: a key revoked since is refused from the revocation's
 * effective time on (docs/keys.md). A rotation announces the new key before it revokes the old, and
 * the participant signs with the new one once it is announced, so no honest response is lost.
 */
function signatureVerifies(
  topology: AggregatorTopology,
  input: Pick<MediatorInput, "timestamp" | "sender">,
  response: ConfirmationResponse,
): boolean {
  const keys = topology.signingKeysOf(input.sender, input.timestamp);
  const key = keys.find((k) => k.fingerprint === response.signingKeyFingerprint);
  return key !== undefined && verify(key.publicKey, confirmationResponseDigest(response), response.signature);
}

function decided(request: OpenRequest, outcome: VerdictOutcome, at: Micros): DecidedVerdict {
  return {
    requestId: request.requestId,
    rootHash: request.rootHash,
    outcome,
    recipients: request.recipients,
    decidedAt: at,
  };
}

function sortedUnique(values: Iterable<string>): string[] {
  return [...new Set(values)].sort();
}

/** The RequestStore in memory: for tests, and the reference the database store must behave as. */
export class InMemoryRequestStore implements RequestStore {
  readonly requests = new Map<Micros, OpenRequest>();
  readonly decidedVerdicts = new Map<Micros, DecidedVerdict>();
  readonly responses: ResponseRecord[] = [];

  async expired(at: Micros): Promise<OpenRequest[]> {
    return [...this.requests.values()]
      .filter((r) => r.deadline < at)
      .sort((a, b) => (a.requestId < b.requestId ? -1 : a.requestId > b.requestId ? 1 : 0));
  }
  async lookup(requestId: Micros): Promise<OpenRequest | "decided" | undefined> {
    return this.decidedVerdicts.has(requestId) ? "decided" : this.requests.get(requestId);
  }
  async open(request: OpenRequest): Promise<void> {
    this.requests.set(request.requestId, request);
  }
  async update(request: OpenRequest): Promise<void> {
    this.requests.set(request.requestId, request);
  }
  async decide(verdict: DecidedVerdict): Promise<void> {
    this.requests.delete(verdict.requestId);
    this.decidedVerdicts.set(verdict.requestId, verdict);
  }
  async recordResponse(record: ResponseRecord): Promise<void> {
    this.responses.push(record);
  }
}
