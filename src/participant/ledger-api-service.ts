import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { CommandCompletionService } from "../gen/lockstep/ledger/v1/command_completion_service_pb.ts";
import { CommandService } from "../gen/lockstep/ledger/v1/command_service_pb.ts";
import { CommandSubmissionService } from "../gen/lockstep/ledger/v1/command_submission_service_pb.ts";
import { PartyManagementService } from "../gen/lockstep/ledger/v1/party_management_service_pb.ts";
import { StateService } from "../gen/lockstep/ledger/v1/state_service_pb.ts";
import { UpdateService } from "../gen/lockstep/ledger/v1/update_service_pb.ts";
import { isMigrationMarker, type LedgerApiBackend } from "./ledger-api-backend.ts";
import { LedgerApiGuard } from "./ledger-api-guard.ts";
import {
  checkIdLength,
  checkOffset,
  completionToProto,
  contractToProto,
  migrationToProto,
  optionalString,
  toSubmitCommands,
  transactionToProto,
} from "./ledger-api-mapping.ts";

/**
 * Registers the six services of lockstep.ledger.v1 on a participant's router. Every RPC is a thin
 * mapping onto the backend; LockstepErrors it throws reach clients through the node's error
 * interceptor (gRPC status + ErrorDetail; Connect JSON error body with the code in details).
 * Streams run until the client goes or the node stops: both abort the handler's signal, which
 * the backend's iterators honour. `guard` authorizes every call first (ledger-api-guard.ts;
 * docs/security.md): without it, or with auth off, every call is allowed.
 */
export function ledgerApiRoutes(
  backend: LedgerApiBackend,
  guard = new LedgerApiGuard(),
): (router: ConnectRouter) => void {
  return (router) => {
    router.service(PartyManagementService, {
      allocateParty: async (req, ctx: HandlerContext) => {
        await guard.admin(ctx, "allocate a party");
        checkIdLength(req.displayName, "display_name");
        return backend.allocateParty(req.partyIdHint, optionalString(req.displayName));
      },
      listParties: async (_req, ctx: HandlerContext) => {
        await guard.admin(ctx, "list the known parties");
        return { parties: [...(await backend.listParties())] };
      },
    });

    router.service(CommandSubmissionService, {
      submit: async (req, ctx: HandlerContext) =>
        backend.submit(toSubmitCommands(await guard.submission(ctx, req.commands))),
    });

    router.service(CommandService, {
      submitAndWait: async (req, ctx: HandlerContext) => {
        const commands = toSubmitCommands(await guard.submission(ctx, req.commands));
        // The caller's deadline (grpc-timeout / connect-timeout-ms), as Canton's command service takes it.
        const r = await backend.submitAndWait(commands, ctx.signal, {
          timeoutMs: ctx.timeoutMs(),
        });
        return {
          updateId: r.updateId,
          offset: r.offset,
          createdContractIds: [...r.createdContractIds],
          archivedContractIds: [...r.archivedContractIds],
          completion: completionToProto(r.completion),
        };
      },
    });

    router.service(CommandCompletionService, {
      completionStream: async function* (req, ctx: HandlerContext) {
        const { auth, userId } = await guard.completions(ctx, req.userId, req.parties);
        const completions = guard.stream(ctx, auth, req.parties, (signal) =>
          backend.completionStream(
            {
              beginExclusive: checkOffset(req.beginExclusive, "begin_exclusive"),
              userId,
              parties: req.parties,
              incarnation: optionalString(req.incarnation),
            },
            signal,
          ),
        );
        for await (const item of completions) {
          yield {
            response: isMigrationMarker(item)
              ? { case: "synchronizerMigration" as const, value: migrationToProto(item) }
              : { case: "completion" as const, value: completionToProto(item) },
          };
        }
      },
    });

    router.service(UpdateService, {
      getUpdates: async function* (req, ctx: HandlerContext) {
        const auth = await guard.read(ctx, req.parties, "read updates of");
        const updates = guard.stream(ctx, auth, req.parties, (signal) =>
          backend.updateStream(
            {
              beginExclusive: checkOffset(req.beginExclusive, "begin_exclusive"),
              endInclusive:
                req.endInclusive === undefined ? undefined : checkOffset(req.endInclusive, "end_inclusive"),
              parties: req.parties,
              incarnation: optionalString(req.incarnation),
            },
            signal,
          ),
        );
        for await (const item of updates) {
          yield {
            update: isMigrationMarker(item)
              ? { case: "synchronizerMigration" as const, value: migrationToProto(item) }
              : { case: "transaction" as const, value: transactionToProto(item) },
          };
        }
      },
    });

    router.service(StateService, {
      getLedgerEnd: async (req, ctx: HandlerContext) => {
        await guard.caller(ctx);
        return backend.ledgerEnd({ incarnation: optionalString(req.incarnation) });
      },
      getActiveContracts: async (req, ctx: HandlerContext) => {
        await guard.read(ctx, req.parties, "read the active contracts of");
        const r = await backend.activeContracts({
          parties: req.parties,
          activeAtOffset:
            req.activeAtOffset === undefined
              ? undefined
              : checkOffset(req.activeAtOffset, "active_at_offset"),
          incarnation: optionalString(req.incarnation),
          template: optionalString(req.template),
        });
        return { offset: r.offset, contracts: r.contracts.map(contractToProto) };
      },
    });
  };
}
