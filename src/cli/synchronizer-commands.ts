import type { Command } from "commander";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { microsToIso } from "../common/time.ts";
import { type MemberAdmission, SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";
import { table } from "./output.ts";

/** A MemberAdmission as `--json` prints it (bigints as strings). */
function admissionJson(a: MemberAdmission) {
  return {
    member: a.member,
    state: a.state,
    changedAt: a.changedAt.toString(),
    changedBy: a.changedBy,
    registeredAt: a.registeredAt?.toString() ?? null,
  };
}

async function sequencerFor(command: Command) {
  const loaded = await loadCliConfig(command);
  return createNodeClient(SequencerService, nodeEndpoint(loaded.config.synchronizer.sequencer).url);
}

/**
 * `lockstep synchronizer admit | revoke | members`: the permissioned synchronizer's allow-list, kept
 * by the sequencer (docs/security.md "Permissioned synchronizer"; Canton: onboardingRestriction and
 * ParticipantSynchronizerPermission, disable_member).
 */
export function registerSynchronizerCommands(program: Command): void {
  const synchronizer = program
    .command("synchronizer")
    .description("who may join the synchronizer: admit, revoke and list member ids");

  synchronizer
    .command("admit <member-id>")
    .description(
      "put a member id (NAME::FINGERPRINT) on the allow-list, or let a revoked member back in; its node then registers by itself",
    )
    .action(async (member: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const { admission, changed } = await (await sequencerFor(command)).admitMember({ member });
      const json = { ...admissionJson(admission as MemberAdmission), changed };
      out.result(json, () =>
        changed
          ? `admitted ${member} at ${json.changedAt} (${microsToIso(BigInt(json.changedAt))})`
          : `${member} was admitted already (since ${json.changedAt})`,
      );
    });

  synchronizer
    .command("revoke <member-id>")
    .description(
      "revoke a member: from now on its sends and subscriptions are refused and its open subscription ends (SEQUENCER_MEMBER_REVOKED)",
    )
    .action(async (member: string, _opts: unknown, command: Command) => {
      const out = outputFor(command);
      const { admission, changed } = await (await sequencerFor(command)).revokeMember({ member });
      const json = { ...admissionJson(admission as MemberAdmission), changed };
      out.result(json, () =>
        changed
          ? `revoked ${member} at ${json.changedAt} (${microsToIso(BigInt(json.changedAt))}); what it sent before stays sequenced`
          : `${member} was revoked already (since ${json.changedAt})`,
      );
    });

  synchronizer
    .command("members")
    .description("the onboarding mode and every member id on the allow-list, admitted or revoked")
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const response = await (await sequencerFor(command)).listMemberAdmissions({});
      const members = response.admissions.map(admissionJson);
      out.result({ onboarding: response.onboarding, members }, () =>
        [
          `onboarding: ${response.onboarding}`,
          table(
            ["MEMBER", "STATE", "SINCE", "BY", "REGISTERED"],
            members.map((m) => [m.member, m.state, m.changedAt, m.changedBy, m.registeredAt ?? "-"]),
          ),
        ].join("\n"),
      );
    });
}
