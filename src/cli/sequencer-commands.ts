import type { Command } from "commander";
import { LockstepError } from "../common/errors.ts";
import { type EndpointConfig, nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { microsToIso } from "../common/time.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";
import { table } from "./output.ts";

function sequencerClient(sequencer: EndpointConfig) {
  return createNodeClient(SequencerService, nodeEndpoint(sequencer).url);
}

function ts(value: bigint | undefined): string {
  return value === undefined ? "-" : `${value} (${microsToIso(value)})`;
}

/** `lockstep sequencer status | prune`: the operator's view of the sequencer's retention. */
export function registerSequencerCommands(program: Command): void {
  const sequencer = program.command("sequencer").description("inspect and prune the sequencer");

  sequencer
    .command("status")
    .description(
      "head, per-member positions and acknowledgements, pruning lower bound and safe pruning point",
    )
    .action(async (_opts: unknown, command: Command) => {
      const out = outputFor(command);
      const loaded = await loadCliConfig(command);
      const s = await sequencerClient(loaded.config.synchronizer.sequencer).getSequencerStatus({});
      const json = {
        sequencerId: s.sequencerId,
        synchronizerId: s.synchronizerId,
        head: s.headTimestamp?.toString() ?? null,
        pruningLowerBound: s.pruningLowerBound?.toString() ?? null,
        safePruningTimestamp: s.safePruningTimestamp?.toString() ?? null,
        pinnedBySet: s.pinnedBySet || null,
        retention: `${s.retentionMicros / 86_400_000_000n}d`,
        /** The sequencer's clock now (never below the head). */
        sequencerTime: s.sequencerTime.toString(),
        holds: s.holds.map((h) => ({ set: h.setId, member: h.member, timestamp: h.timestamp.toString() })),
        stranded: s.stranded.map((x) => ({
          set: x.setId,
          prunedBefore: x.prunedBefore.toString(),
          strandedAt: microsToIso(x.strandedAt),
        })),
        members: s.members.map((m) => ({
          member: m.member,
          registeredAt: m.registeredAt?.toString() ?? null,
          lastDelivered: m.lastDelivered?.toString() ?? null,
          acknowledged: m.acknowledged?.toString() ?? null,
          writerEpoch: m.writerEpoch.toString(),
          writerActivation: m.writerActivation,
        })),
      };
      out.result(json, () =>
        [
          `sequencer ${s.sequencerId}`,
          `head                 ${ts(s.headTimestamp)}`,
          `pruning lower bound  ${ts(s.pruningLowerBound)}`,
          `safe to prune below  ${ts(s.safePruningTimestamp)}${s.pinnedBySet ? ` (pinned by backup set ${s.pinnedBySet})` : ""}`,
          `retention            ${json.retention}`,
          table(
            ["MEMBER", "LAST DELIVERED", "ACKNOWLEDGED", "EPOCH", "ACTIVATION"],
            json.members.map((m) => [
              m.member,
              m.lastDelivered ?? "-",
              m.acknowledged ?? "-",
              m.writerEpoch,
              m.writerActivation || "-",
            ]),
          ),
          json.holds.length === 0
            ? "retention holds: none"
            : table(
                ["HOLD (BACKUP SET)", "MEMBER", "FROM"],
                json.holds.map((h) => [h.set, h.member, h.timestamp]),
              ),
          ...json.stranded.map(
            (x) =>
              `stranded: backup set ${x.set} (a forced prune below ${x.prunedBefore} at ${x.strandedAt})`,
          ),
        ].join("\n"),
      );
    });

  sequencer
    .command("prune")
    .description(
      "remove events below a timestamp; refused past the safe point (the members' acknowledgements and the backup sets' retention holds)",
    )
    .option("--before <micros>", "prune events with a timestamp below this (microseconds since the epoch)")
    .option("--safe", "prune up to the current safe pruning point")
    .option(
      "--retention",
      "prune what is older than synchronizer.sequencer.retention, in sequencer time (head - retention)",
    )
    .option(
      "--force",
      "prune past backup sets' retention holds: those sets are released and can no longer be restored against this sequencer (never past an acknowledgement)",
    )
    .action(
      async (
        opts: { before?: string; safe?: boolean; retention?: boolean; force?: boolean },
        command: Command,
      ) => {
        const out = outputFor(command);
        if ([opts.before, opts.safe, opts.retention].filter(Boolean).length !== 1) {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: "give exactly one of --before MICROS, --safe or --retention",
          });
        }
        const loaded = await loadCliConfig(command);
        const client = sequencerClient(loaded.config.synchronizer.sequencer);
        let before: bigint;
        if (opts.retention) {
          const status = await client.getSequencerStatus({});
          if (status.headTimestamp === undefined || status.headTimestamp <= status.retentionMicros) {
            throw new LockstepError("INVALID_ARGUMENT", {
              details: "nothing is older than the retention yet",
            });
          }
          before = status.headTimestamp - status.retentionMicros;
        } else if (opts.safe) {
          const safe = (await client.getSequencerStatus({})).safePruningTimestamp;
          if (safe === undefined) {
            throw new LockstepError("INVALID_ARGUMENT", {
              details: "nothing is safe to prune yet (no acknowledgements)",
            });
          }
          before = safe;
        } else if (/^\d+$/.test(opts.before ?? "")) {
          before = BigInt(opts.before as string);
        } else {
          throw new LockstepError("INVALID_ARGUMENT", {
            details: `--before ${opts.before} is not a timestamp in micros`,
          });
        }
        const result = await client.prune({ beforeTimestamp: before, force: Boolean(opts.force) });
        for (const x of result.stranded) {
          out.info(
            `WARNING: --force released the retention holds of backup set ${x.setId}: it can no longer be restored against this sequencer (restore plan refuses it; a full restore of that set, sequencer included, still works)`,
          );
        }
        out.result(
          {
            pruningLowerBound: result.pruningLowerBound.toString(),
            removedEvents: result.removedEvents.toString(),
            stranded: result.stranded.map((x) => x.setId),
          },
          () =>
            `pruned ${result.removedEvents} events; members can subscribe from ${ts(result.pruningLowerBound)}`,
        );
      },
    );
}
