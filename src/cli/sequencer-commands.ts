import type { Command } from "commander";
import { LockstepError } from "../common/errors.ts";
import { createNodeClient, nodeBaseUrl } from "../common/rpc-client.ts";
import { microsToIso } from "../common/time.ts";
import { SequencerService } from "../gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { loadCliConfig, outputFor } from "./cli-context.ts";
import { table } from "./output.ts";

function sequencerClient(port: number) {
  return createNodeClient(SequencerService, nodeBaseUrl(port));
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
      const s = await sequencerClient(loaded.config.synchronizer.sequencer.port).getSequencerStatus({});
      const json = {
        sequencerId: s.sequencerId,
        synchronizerId: s.synchronizerId,
        head: s.headTimestamp?.toString() ?? null,
        pruningLowerBound: s.pruningLowerBound?.toString() ?? null,
        safePruningTimestamp: s.safePruningTimestamp?.toString() ?? null,
        members: s.members.map((m) => ({
          member: m.member,
          registeredAt: m.registeredAt?.toString() ?? null,
          lastDelivered: m.lastDelivered?.toString() ?? null,
          acknowledged: m.acknowledged?.toString() ?? null,
          writerEpoch: m.writerEpoch.toString(),
        })),
      };
      out.result(json, () =>
        [
          `sequencer ${s.sequencerId}`,
          `head                 ${ts(s.headTimestamp)}`,
          `pruning lower bound  ${ts(s.pruningLowerBound)}`,
          `safe to prune below  ${ts(s.safePruningTimestamp)}`,
          table(
            ["MEMBER", "LAST DELIVERED", "ACKNOWLEDGED", "EPOCH"],
            json.members.map((m) => [m.member, m.lastDelivered ?? "-", m.acknowledged ?? "-", m.writerEpoch]),
          ),
        ].join("\n"),
      );
    });

  sequencer
    .command("prune")
    .description(
      "remove events below a timestamp; refused above the safe point (min of the members' acknowledgements)",
    )
    .option("--before <micros>", "prune events with a timestamp below this (microseconds since the epoch)")
    .option("--safe", "prune up to the current safe pruning point")
    .action(async (opts: { before?: string; safe?: boolean }, command: Command) => {
      const out = outputFor(command);
      if (Boolean(opts.before) === Boolean(opts.safe)) {
        throw new LockstepError("INVALID_ARGUMENT", {
          details: "give exactly one of --before MICROS or --safe",
        });
      }
      const loaded = await loadCliConfig(command);
      const client = sequencerClient(loaded.config.synchronizer.sequencer.port);
      let before: bigint;
      if (opts.safe) {
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
      const result = await client.prune({ beforeTimestamp: before });
      out.result(
        {
          pruningLowerBound: result.pruningLowerBound.toString(),
          removedEvents: result.removedEvents.toString(),
        },
        () =>
          `pruned ${result.removedEvents} events; members can subscribe from ${ts(result.pruningLowerBound)}`,
      );
    });
}
