import type { SequencerClientStatus } from "./sequencer-client.ts";

/**
 * What a participant or mediator adds to its status while the sequencer has not admitted it
 * (docs/security.md "Permissioned synchronizer"): `position.notAdmitted` names its member id (the
 * launcher reads it to admit the nodes of its config) and `warning` the refusal's code and remedy,
 * which status shows as the node's last error.
 */
export function admissionStatus(status: SequencerClientStatus): {
  position: { notAdmitted?: string };
  warning?: { code: string; message: string; remedy: string };
} {
  if (status.notAdmitted === null) return { position: {} };
  return { position: { notAdmitted: status.notAdmitted }, warning: status.lastError ?? undefined };
}

/** Why a participant still refuses submissions when the synchronizer has not admitted it. */
export function notAdmittedReason(status: SequencerClientStatus): string | undefined {
  if (status.notAdmitted === null) return undefined;
  return `the synchronizer has not admitted it (TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED): lockstep synchronizer admit ${status.notAdmitted}`;
}
