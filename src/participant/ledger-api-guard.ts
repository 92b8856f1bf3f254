import type { HandlerContext } from "@connectrpc/connect";
import { DEFAULT_USER_RIGHTS_CHECK_INTERVAL_MS } from "../common/config-schema.ts";
import type { LedgerApiAuthenticator } from "./ledger-api-auth.ts";
import { watchStream } from "./ledger-api-stream-watch.ts";
import {
  type AuthContext,
  authorizeSubmission,
  matchingUserId,
  requireAdmin,
  requireRead,
  staleStreamReason,
} from "./user-rights.ts";

/** What authorization reads of a submission (the proto Commands). */
interface SubmittedCommands {
  readonly userId: string;
  readonly actAs: readonly string[];
  readonly readAs: readonly string[];
}

/**
 * What each Ledger API call needs (Canton's *ServiceAuthorization classes in
 * canton/community/ledger/ledger-api-core/.../ledger/api/auth/services): submissions CanActAs for
 * every act-as party and the token's own user id; ACS, updates and completions CanReadAs or
 * CanActAs for every requested party; party and user management ParticipantAdmin; the ledger end
 * any authenticated user. Without an authenticator (auth off) every call passes.
 */
export class LedgerApiGuard {
  /** How often open streams re-read their user's rights (`ledger-api.user-rights-check-interval`). */
  private readonly checkIntervalMs: number;

  constructor(
    private readonly authenticator?: LedgerApiAuthenticator,
    options: { userRightsCheckIntervalMs?: number } = {},
  ) {
    this.checkIntervalMs = options.userRightsCheckIntervalMs ?? DEFAULT_USER_RIGHTS_CHECK_INTERVAL_MS;
  }

  /** The caller, or undefined when auth is off; UNAUTHENTICATED / ACCESS_TOKEN_EXPIRED otherwise. */
  async caller(ctx: HandlerContext): Promise<AuthContext | undefined> {
    return this.authenticator?.authenticate(ctx.requestHeader.get("authorization"));
  }

  async admin(ctx: HandlerContext, action: string): Promise<AuthContext | undefined> {
    const auth = await this.caller(ctx);
    if (auth) requireAdmin(auth, action);
    return auth;
  }

  /**
   * The commands as submitted (before their validation, so that an empty user id can be filled
   * from the token, as Canton does); undefined passes through to be refused as missing.
   */
  async submission<C extends SubmittedCommands>(
    ctx: HandlerContext,
    commands: C | undefined,
  ): Promise<C | undefined> {
    const auth = await this.caller(ctx);
    if (!auth || !commands) return commands;
    const userId = authorizeSubmission(auth, commands);
    return userId === commands.userId ? commands : { ...commands, userId };
  }

  async read(
    ctx: HandlerContext,
    parties: readonly string[],
    action: string,
  ): Promise<AuthContext | undefined> {
    const auth = await this.caller(ctx);
    if (auth) requireRead(auth, parties, action);
    return auth;
  }

  /** Completions are per user: only the token's own (Canton's CommandCompletionServiceAuthorization). */
  async completions(
    ctx: HandlerContext,
    userId: string,
    parties: readonly string[],
  ): Promise<{ auth: AuthContext | undefined; userId: string }> {
    const auth = await this.read(ctx, parties, "read completions of");
    return { auth, userId: auth ? matchingUserId(auth, userId, "read completions") : userId };
  }

  /**
   * A stream of `parties`' data that stays authorized while it runs (ledger-api-stream-watch.ts):
   * it ends with ACCESS_TOKEN_EXPIRED when the caller's token expires, and with
   * STALE_STREAM_AUTHORIZATION when a periodic re-read of the user's rights finds that they no
   * longer cover `parties` (or the user is gone). `start` gets the signal to produce under (the
   * call's, aborted also when the stream is closed).
   */
  stream<T>(
    ctx: HandlerContext,
    auth: AuthContext | undefined,
    parties: readonly string[],
    start: (signal: AbortSignal) => AsyncIterable<T>,
  ): AsyncIterable<T> {
    const abort = new AbortController();
    const items = start(AbortSignal.any([ctx.signal, abort.signal]));
    const authenticator = this.authenticator;
    const recheck =
      auth && authenticator
        ? async () => staleStreamReason(auth.userId, await authenticator.reload(auth), parties)
        : undefined;
    return watchStream(
      items,
      { expiresAtMs: auth?.expiresAtMs, recheck, checkIntervalMs: this.checkIntervalMs },
      abort,
    );
  }
}
