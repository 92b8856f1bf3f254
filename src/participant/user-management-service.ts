import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { LockstepError } from "../common/errors.ts";
import {
  type Right,
  type RightSchema,
  UserManagementService,
  type UserSchema,
} from "../gen/lockstep/ledger/v1/user_management_service_pb.ts";
import type { LedgerApiGuard } from "./ledger-api-guard.ts";
import {
  type AuthContext,
  checkParty,
  checkRight,
  checkUserId,
  requireAdmin,
  type UserRecord,
  type UserRight,
} from "./user-rights.ts";
import type { UserStore } from "./user-store.ts";

type RightInit = MessageInitShape<typeof RightSchema>;

export function rightFromProto(right: Right): UserRight {
  switch (right.kind.case) {
    case "participantAdmin":
      return { kind: "participant-admin" };
    case "canActAs":
      return checkRight({ kind: "can-act-as", party: right.kind.value.party });
    case "canReadAs":
      return checkRight({ kind: "can-read-as", party: right.kind.value.party });
    default:
      throw new LockstepError("INVALID_ARGUMENT", { details: "a right names none of its kinds" });
  }
}

export function rightToProto(right: UserRight): RightInit {
  switch (right.kind) {
    case "participant-admin":
      return { kind: { case: "participantAdmin", value: {} } };
    case "can-act-as":
      return { kind: { case: "canActAs", value: { party: right.party } } };
    case "can-read-as":
      return { kind: { case: "canReadAs", value: { party: right.party } } };
  }
}

const userToProto = (user: UserRecord): MessageInitShape<typeof UserSchema> => ({
  id: user.id,
  primaryParty: user.primaryParty,
});

/**
 * Canton's UserManagementService (UserManagementServiceAuthorization: every call needs
 * ParticipantAdmin, except GetUser and ListUserRights for the token's own user, where an empty
 * user_id means that user; with auth off an empty user_id is INVALID_ARGUMENT, as Canton's).
 */
export function userManagementRoutes(
  users: UserStore,
  guard: LedgerApiGuard,
): (router: ConnectRouter) => void {
  const admin = (ctx: HandlerContext, action: string) => guard.admin(ctx, action);
  /** GetUser / ListUserRights: one's own without admin. */
  const ownOrAdmin = async (ctx: HandlerContext, requested: string, action: string): Promise<string> => {
    const auth: AuthContext | undefined = await guard.caller(ctx);
    if (auth && (requested === "" || requested === auth.userId)) return auth.userId;
    if (requested === "")
      throw new LockstepError("INVALID_ARGUMENT", {
        details: "an empty user_id means the authenticated user, and this call has none",
      });
    if (auth) requireAdmin(auth, action);
    return checkUserId(requested);
  };
  return (router) => {
    router.service(UserManagementService, {
      createUser: async (req, ctx) => {
        await admin(ctx, "create users");
        if (!req.user) throw new LockstepError("INVALID_ARGUMENT", { details: "user is required" });
        const user: UserRecord = {
          id: checkUserId(req.user.id, "user.id"),
          primaryParty:
            req.user.primaryParty === "" ? "" : checkParty(req.user.primaryParty, "user.primary_party"),
        };
        return { user: userToProto(await users.create(user, req.rights.map(rightFromProto))) };
      },
      getUser: async (req, ctx) => {
        const userId = await ownOrAdmin(ctx, req.userId, "read other users");
        return { user: userToProto(await users.get(userId)) };
      },
      deleteUser: async (req, ctx) => {
        await admin(ctx, "delete users");
        await users.delete(checkUserId(req.userId));
        return {};
      },
      listUsers: async (req, ctx) => {
        await admin(ctx, "list users");
        const page = await users.list(req.pageToken, req.pageSize);
        return { users: page.users.map(userToProto), nextPageToken: page.nextPageToken };
      },
      grantUserRights: async (req, ctx) => {
        await admin(ctx, "grant rights");
        const granted = await users.grant(checkUserId(req.userId), req.rights.map(rightFromProto));
        return { newlyGrantedRights: granted.map(rightToProto) };
      },
      revokeUserRights: async (req, ctx) => {
        await admin(ctx, "revoke rights");
        const revoked = await users.revoke(checkUserId(req.userId), req.rights.map(rightFromProto));
        return { newlyRevokedRights: revoked.map(rightToProto) };
      },
      listUserRights: async (req, ctx) => {
        const userId = await ownOrAdmin(ctx, req.userId, "read other users' rights");
        return { rights: (await users.rights(userId)).map(rightToProto) };
      },
    });
  };
}
