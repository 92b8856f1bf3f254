import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { stringify } from "yaml";
import { fromConnectError } from "../common/connect-errors.ts";
import { freePort } from "../common/loopback.ts";
import { nodeEndpoint } from "../common/node-endpoint.ts";
import { createNodeClient } from "../common/rpc-client.ts";
import { CommandService } from "../gen/lockstep/ledger/v1/command_service_pb.ts";
import { PartyManagementService } from "../gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { StateService } from "../gen/lockstep/ledger/v1/state_service_pb.ts";
import { embeddedClusterDir } from "../node/node-database.ts";
import { LocalPostgres } from "../storage/local-postgres.ts";
import type { Output } from "./output.ts";
import { runLockstepJson, type SelfResult } from "./self-process.ts";

export interface DemoStep {
  step: string;
  proves: string;
  ok: boolean;
  detail: string;
  seconds: number;
}

const USER = "demo-app";
/** Short, so the deduplication recovery window visibly closes within the demo. */
const TOLERANCE = "5s";

/** The demo's own config leaves `host` at its default, so a port is all that names a participant. */
function clients(port: number) {
  const { url } = nodeEndpoint({ port });
  const make = <S extends DescService>(s: S): Client<S> => createNodeClient(s, url);
  return { parties: make(PartyManagementService), commands: make(CommandService), state: make(StateService) };
}

/**
 * The whole backup/restore story on an embedded database (docs/cli.md `lockstep demo`): every step runs
 * the real operator commands (`lockstep up/backup/restore/node … --json` as subprocesses) or the real
 * Ledger API, and states what it proves. The verdict is ok only if every step passed.
 */
export class DemoStory {
  readonly steps: DemoStep[] = [];
  private configPath = "";
  private ports = { sequencer: 0, mediator: 0, p1: 0, p2: 0 };

  constructor(
    private readonly dataDir: string,
    private readonly out: Output,
  ) {}

  private async step(step: string, proves: string, body: () => Promise<string>): Promise<void> {
    const started = Date.now();
    this.out.info(`demo: ${step} …`);
    let ok = true;
    let detail: string;
    try {
      detail = await body();
    } catch (error) {
      ok = false;
      detail = fromConnectError(error)?.message ?? (error as Error).message;
    }
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    this.steps.push({ step, proves, ok, detail, seconds });
    this.out.info(`demo:   ${ok ? "ok" : "FAILED"} (${seconds}s) ${detail}\n        proves: ${proves}`);
    if (!ok) throw new Error(`step failed: ${step}`);
  }

  private async cli(args: string[], expectCode = 0): Promise<Record<string, unknown>> {
    const r: SelfResult = await runLockstepJson([...args, "--config", this.configPath]);
    if (r.code !== expectCode) {
      const error = (r.json?.error as { code?: string; message?: string } | undefined) ?? {};
      throw new Error(
        `lockstep ${args.join(" ")} ${r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`}: ${error.code ?? ""} ${error.message ?? r.stderr.slice(-400)}`,
      );
    }
    return r.json ?? {};
  }

  async writeConfig(): Promise<void> {
    this.ports = {
      sequencer: await freePort(),
      mediator: await freePort(),
      p1: await freePort(),
      p2: await freePort(),
    };
    const config = {
      "data-dir": "data",
      synchronizer: {
        id: "demo",
        parameters: { "ledger-time-record-time-tolerance": TOLERANCE },
        sequencer: { name: "sequencer1", port: this.ports.sequencer },
        mediator: { name: "mediator1", port: this.ports.mediator },
      },
      participants: [
        // The embedded demo serves the Ledger API without auth, by explicit config (docs/security.md).
        { name: "participant1", port: this.ports.p1, "ledger-api": { auth: { type: "off" } } },
        { name: "participant2", port: this.ports.p2, "ledger-api": { auth: { type: "off" } } },
      ],
      backup: { repository: "backups", format: "custom" },
    };
    this.configPath = join(this.dataDir, "lockstep.yaml");
    writeFileSync(this.configPath, stringify(config));
  }

  /** Runs every step; returns true when all passed. Always tries to stop the network. */
  async run(): Promise<boolean> {
    await this.writeConfig();
    try {
      await this.story();
      return true;
    } catch {
      return false;
    } finally {
      await runLockstepJson(["down", "--config", this.configPath]).catch(() => undefined);
    }
  }

  private async story(): Promise<void> {
    const p1 = clients(this.ports.p1);
    const p2 = clients(this.ports.p2);
    let alice = "";
    let bob = "";
    let set = "";
    const iou = (owner: string, amount: string) => ({ issuer: alice, owner, amount, currency: "USD" });
    const create = (c: ReturnType<typeof clients>, commandId: string, actAs: string, args: object) =>
      c.commands.submitAndWait({
        commands: {
          userId: USER,
          commandId,
          actAs: [actAs],
          command: { case: "create", value: { template: "Iou", createArguments: args as never } },
        },
      });
    const shared = async (c: ReturnType<typeof clients>, party: string) =>
      (await c.state.getActiveContracts({ parties: [party] })).contracts
        .filter((k) => k.signatories.includes(alice) && [...k.signatories, ...k.observers].includes(bob))
        .map((k) => k.contractId)
        .sort();

    await this.step(
      "start the network",
      "every node starts on the embedded PostgreSQL and becomes active",
      async () => {
        const up = await this.cli(["up", "--detach"]);
        return `${(up.nodes as unknown[]).length} nodes running`;
      },
    );
    await this.step("allocate parties", "alice is hosted on participant1, bob on participant2", async () => {
      alice = (await p1.parties.allocateParty({ partyIdHint: "alice" })).party;
      bob = (await p2.parties.allocateParty({ partyIdHint: "bob" })).party;
      return `${alice.slice(0, 18)}…, ${bob.slice(0, 16)}…`;
    });
    await this.step("traffic before the backup", "transactions commit on both participants", async () => {
      for (let i = 1; i <= 4; i++) await create(p1, `before-${i}`, alice, iou(bob, `${i}00.00`));
      const cid = (await shared(p2, bob))[0] as string;
      await p2.commands.submitAndWait({
        commands: {
          userId: USER,
          commandId: "transfer-1",
          actAs: [bob],
          command: {
            case: "exercise",
            value: { contractId: cid, choice: "Transfer", choiceArgument: { newOwner: alice } },
          },
        },
      });
      return "4 Ious alice→bob, one transferred back by bob";
    });
    await this.step(
      "backup create",
      "participants and mediator are dumped before the sequencer; the set is safe",
      async () => {
        const r = await this.cli(["backup", "create"]);
        set = String(r.set);
        if (r.safe !== true) throw new Error(`set ${set} is not safe: ${JSON.stringify(r.unsafe)}`);
        return `set ${set}`;
      },
    );
    let before: string[] = [];
    await this.step(
      "traffic after the backup",
      "these transactions are on the sequencer but not in the backup",
      async () => {
        for (let i = 1; i <= 2; i++) await create(p1, `after-${i}`, alice, iou(bob, `${i}0.00`));
        // participant1 acknowledged them; participant2 commits them a moment later: wait for it.
        const deadline = Date.now() + 30_000;
        for (;;) {
          before = await shared(p2, bob);
          const onP1 = await shared(p1, alice);
          if (JSON.stringify(before) === JSON.stringify(onP1)) break;
          if (Date.now() > deadline) throw new Error("participant2 did not see the new transactions");
          await sleep(100);
        }
        return `participant2 sees ${before.length} shared contracts`;
      },
    );
    await this.step(
      "lose participant2's database",
      "the node is stopped and its database dropped",
      async () => {
        await this.cli(["node", "stop", "participant2"]);
        const cluster = new LocalPostgres({ dir: embeddedClusterDir(join(this.dataDir, "data")) });
        await cluster.start();
        await cluster.dropDatabase("participant2");
        return "database participant2 dropped";
      },
    );
    await this.step("restore plan", "every preflight check passes for participant2", async () => {
      const plan = await this.cli(["restore", "plan", set, "--nodes", "participant2"]);
      const checks = plan.checks as { check: string; verdict: string }[];
      return checks.map((c) => `${c.check}:${c.verdict}`).join(", ");
    });
    await this.step("restore apply", "the database is restored with a new incarnation", async () => {
      await this.cli(["restore", "apply", set, "--nodes", "participant2", "--yes"]);
      await this.cli(["node", "start", "participant2", "--detach"]);
      return "participant2 restored and started";
    });
    await this.step(
      "deduplication recovery",
      "submissions are refused until the window closes, then accepted",
      async () => {
        let refusals = 0;
        const deadline = Date.now() + 90_000;
        for (;;) {
          try {
            await p2.commands.submitAndWait({
              commands: {
                userId: USER,
                commandId: "after-restore",
                actAs: [bob],
                command: {
                  case: "create",
                  value: {
                    template: "Iou",
                    createArguments: { issuer: bob, owner: alice, amount: "1.00", currency: "USD" },
                  },
                },
              },
            });
            break;
          } catch (error) {
            const code = fromConnectError(error)?.code;
            if (code !== "DEDUPLICATION_STATE_RECOVERING" || Date.now() > deadline) throw error;
            refusals++;
            await sleep(1000);
          }
        }
        if (refusals === 0) throw new Error("the first submission after the restore was not refused");
        return `refused ${refusals}× with DEDUPLICATION_STATE_RECOVERING, then accepted`;
      },
    );
    await this.step(
      "replay and agreement",
      "participant2 replayed what it lost and agrees with participant1",
      async () => {
        const onP2 = await shared(p2, bob);
        const onP1 = await shared(p1, alice);
        if (JSON.stringify(onP2) !== JSON.stringify(before))
          throw new Error("participant2 did not replay to its pre-loss state");
        if (JSON.stringify(onP1) !== JSON.stringify(onP2))
          throw new Error("participants disagree on shared contracts");
        return `${onP2.length} shared contracts, identical on both participants`;
      },
    );
  }
}
