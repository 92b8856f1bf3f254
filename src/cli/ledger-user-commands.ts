import type { Command } from "commander";
import { DurationFormatError, parseDuration } from "../common/duration.ts";
import { LockstepError } from "../common/errors.ts";
import { type Right, UserManagementService } from "../gen/lockstep/ledger/v1/user_management_service_pb.ts";
import { issueHs256Token } from "../participant/ledger-api-token.ts";
import { rightToProto } from "../participant/user-management-service.ts";
import { rightKey, type UserRight } from "../participant/user-rights.ts";
import { outputFor } from "./cli-context.ts";
import { ledgerCall, participantTarget } from "./ledger-commands.ts";
import { table } from "./output.ts";

/** `ledger user …` and `ledger token` (docs/cli.md "Ledger API users"; docs/security.md). */

interface RightFlags {
  participant: string;
  actAs?: string[];
  readAs?: string[];
  admin?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function rightsFromFlags(flags: RightFlags): UserRight[] {
  return [
    ...(flags.admin ? [{ kind: "participant-admin" as const }] : []),
    ...(flags.actAs ?? []).map((party) => ({ kind: "can-act-as" as const, party })),
    ...(flags.readAs ?? []).map((party) => ({ kind: "can-read-as" as const, party })),
  ];
}

function rightFromWire(right: Right): UserRight | undefined {
  switch (right.kind.case) {
    case "participantAdmin":
      return { kind: "participant-admin" };
    case "canActAs":
      return { kind: "can-act-as", party: right.kind.value.party };
    case "canReadAs":
      return { kind: "can-read-as", party: right.kind.value.party };
    default:
      return undefined;
  }
}

const rightNames = (rights: readonly Right[]): string[] =>
  rights.map(rightFromWire).flatMap((r) => (r ? [rightKey(r)] : []));

function withRightFlags(command: Command): Command {
  return command
    .requiredOption("--participant <name>", "the participant whose users these are")
    .option("--act-as <party>", "the right CanActAs(party) (repeatable)", collect)
    .option("--read-as <party>", "the right CanReadAs(party) (repeatable)", collect)
    .option("--admin", "the right ParticipantAdmin");
}

export function registerLedgerUserCommands(ledger: Command): void {
  const user = ledger.command("user").description("manage the participant's Ledger API users and rights");

  withRightFlags(user.command("create <user-id>").description("create a user with its first rights"))
    .option("--primary-party <party>", "the user's primary party")
    .action(async (userId: string, opts: RightFlags & { primaryParty?: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const rights = rightsFromFlags(opts);
      await ledgerCall(target, UserManagementService, (c) =>
        c.createUser(
          { user: { id: userId, primaryParty: opts.primaryParty ?? "" }, rights: rights.map(rightToProto) },
          target.options,
        ),
      );
      out.result({ user: userId, rights: rights.map(rightKey) }, () => `created user ${userId}`);
    });

  user
    .command("get [user-id]")
    .description("a user (default: the token's own)")
    .requiredOption("--participant <name>", "the participant to ask")
    .action(async (userId: string | undefined, opts: { participant: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const r = await ledgerCall(target, UserManagementService, (c) =>
        c.getUser({ userId: userId ?? "" }, target.options),
      );
      const json = { id: r.user?.id ?? "", primaryParty: r.user?.primaryParty ?? "" };
      out.result(json, () => `${json.id}${json.primaryParty ? ` (primary party ${json.primaryParty})` : ""}`);
    });

  user
    .command("list")
    .description("every user of the participant")
    .requiredOption("--participant <name>", "the participant to ask")
    .action(async (opts: { participant: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const users: { id: string; primaryParty: string }[] = [];
      let pageToken = "";
      do {
        const page = await ledgerCall(target, UserManagementService, (c) =>
          c.listUsers({ pageToken }, target.options),
        );
        users.push(...page.users.map((u) => ({ id: u.id, primaryParty: u.primaryParty })));
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      out.result({ users }, () =>
        table(
          ["USER", "PRIMARY PARTY"],
          users.map((u) => [u.id, u.primaryParty || "-"]),
        ),
      );
    });

  user
    .command("delete <user-id>")
    .description("delete a user and its rights")
    .requiredOption("--participant <name>", "the participant")
    .action(async (userId: string, opts: { participant: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      await ledgerCall(target, UserManagementService, (c) => c.deleteUser({ userId }, target.options));
      out.result({ deleted: userId }, () => `deleted user ${userId}`);
    });

  withRightFlags(
    user.command("grant <user-id>").description("grant rights; prints those that are new"),
  ).action(async (userId: string, opts: RightFlags, command: Command) => {
    const out = outputFor(command);
    const target = await participantTarget(command, opts.participant);
    const rights = requireSomeRight(opts);
    const r = await ledgerCall(target, UserManagementService, (c) =>
      c.grantUserRights({ userId, rights: rights.map(rightToProto) }, target.options),
    );
    const granted = rightNames(r.newlyGrantedRights);
    out.result({ user: userId, granted }, () => `granted ${granted.join(", ") || "nothing new"}`);
  });

  withRightFlags(user.command("revoke <user-id>").description("revoke rights; prints those it had")).action(
    async (userId: string, opts: RightFlags, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const rights = requireSomeRight(opts);
      const r = await ledgerCall(target, UserManagementService, (c) =>
        c.revokeUserRights({ userId, rights: rights.map(rightToProto) }, target.options),
      );
      const revoked = rightNames(r.newlyRevokedRights);
      out.result(
        { user: userId, revoked },
        () => `revoked ${revoked.join(", ") || "nothing (it had none of them)"}`,
      );
    },
  );

  user
    .command("rights [user-id]")
    .description("a user's rights (default: the token's own user)")
    .requiredOption("--participant <name>", "the participant to ask")
    .action(async (userId: string | undefined, opts: { participant: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      const r = await ledgerCall(target, UserManagementService, (c) =>
        c.listUserRights({ userId: userId ?? "" }, target.options),
      );
      const rights = rightNames(r.rights);
      out.result({ rights }, () => (rights.length === 0 ? "no rights" : rights.join("\n")));
    });

  ledger
    .command("token")
    .description("issue an access token for a user (participants with hs256 auth; reads its secret file)")
    .requiredOption("--participant <name>", "the participant the token is for")
    .requiredOption("--user <user-id>", "the token's user (`sub`)")
    .option("--expires-in <duration>", "how long the token is valid", "1h")
    .action(async (opts: { participant: string; user: string; expiresIn: string }, command: Command) => {
      const out = outputFor(command);
      const target = await participantTarget(command, opts.participant);
      let ttlMs: number;
      try {
        ttlMs = parseDuration(opts.expiresIn);
      } catch (error) {
        if (error instanceof DurationFormatError)
          throw new LockstepError("INVALID_ARGUMENT", { details: `--expires-in: ${error.message}` });
        throw error;
      }
      const token = await issueHs256Token(target.name, target.config["ledger-api"]?.auth, opts.user, ttlMs);
      out.result({ token }, () => token);
    });
}

function requireSomeRight(flags: RightFlags): UserRight[] {
  const rights = rightsFromFlags(flags);
  if (rights.length === 0)
    throw new LockstepError("INVALID_ARGUMENT", {
      details: "name at least one of --act-as, --read-as, --admin",
    });
  return rights;
}
