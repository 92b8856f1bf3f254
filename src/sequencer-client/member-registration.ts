import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { END_OF_TIME } from "../common/time.ts";
import type { KeyStore } from "../crypto/key-store.ts";
import type { MemberStateStore } from "./member-state-store.ts";
import type { Registration } from "./sequencer-client.ts";
import { memberIdFor, memberRegistration, registerMemberRequest } from "./sequencer-requests.ts";
import type { SequencerTransport } from "./sequencer-transport.ts";
import { registeredAtOf } from "./topology-bootstrap.ts";

export interface RegistrationDeps {
  transport: SequencerTransport;
  keys: KeyStore;
  memberState: MemberStateStore;
  memberName: string;
  log: Logger;
  /** NodeKindContext.settleWriterEpoch: runs before anything else reaches the sequencer. */
  settleWriterEpoch?: (sequencerRecord: () => Promise<bigint>) => Promise<void>;
}

/**
 * Bootstrap, idempotent: keys on first use; then the registration remembered in the member's DB, or
 * else RegisterMember (unless topology already lists the member with this namespace key: a crash
 * after registering, or a node restored with its keys) and the topology as of the registration,
 * saved with it in one transaction.
 */
export async function ensureRegistered(deps: RegistrationDeps): Promise<Registration> {
  const { transport, log } = deps;
  const { namespace, signing } = await deps.keys.ensureInitialKeys();
  const member = memberIdFor(deps.memberName, namespace);
  // After a restore whose sequencer did not answer: the epoch must clear the sequencer's record
  // before the first request that carries it (throws SEQUENCER_UNAVAILABLE meanwhile; retried).
  await deps.settleWriterEpoch?.(async () => (await transport.getMemberEvent(member, 0n)).writerEpoch);
  const known = await deps.memberState.registration();
  if (known) {
    if (known.member !== member) {
      throw new LockstepError("INTERNAL_ERROR", {
        details: `registered as ${known.member} but the namespace key gives ${member}`,
      });
    }
    return known;
  }
  const head = await transport.getTopology();
  let registeredAt = registeredAtOf(head.state, member, namespace);
  if (registeredAt === undefined) {
    const request = registerMemberRequest(memberRegistration(member, namespace, signing));
    registeredAt = (await transport.registerMember(request)).registeredAt;
    log.info({ member, registeredAt: String(registeredAt) }, "registered with the sequencer");
  } else {
    log.info({ member, registeredAt: String(registeredAt) }, "already registered with the sequencer");
  }
  // Everything effective up to the registration; later changes arrive as events.
  const asOf = await transport.getTopology(registeredAt);
  const registration: Registration = {
    member,
    registeredAt,
    sequencerId: asOf.sequencerId,
    synchronizerId: asOf.synchronizerId,
    synchronizerNamespace: asOf.synchronizerNamespace,
  };
  await deps.memberState.saveRegistration(registration, asOf.state.transactions());
  return registration;
}

/**
 * Before the first signed request of a process (its first Subscribe): the store follows what the
 * sequencer's topology lists for the member now (a rotation stopped between its steps, or a restore
 * from a set taken mid-rotation), so the node signs with a key the sequencer accepts (docs/keys.md).
 * Throws the transport's retryable error while the sequencer is unreachable.
 */
export async function reconcileKeysWithSequencer(
  deps: Pick<RegistrationDeps, "transport" | "keys" | "log">,
  member: string,
): Promise<void> {
  const head = await deps.transport.getTopology();
  const changed = await deps.keys.reconcile(
    head.state.signingKeysOf(member, END_OF_TIME).map((k) => k.fingerprint),
  );
  if (changed.length > 0) deps.log.info({ changed }, "key store brought in line with topology");
}
