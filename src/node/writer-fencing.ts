import { createHmac, timingSafeEqual } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import { fromConnectError } from "../common/connect-errors.ts";
import { LockstepError, toLockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import type { NodeIdentity } from "../common/node-kind.ts";
import type { ClientTlsIdentity } from "../common/tls-client.ts";
import type { AdminService, FenceWriterRequest } from "../gen/lockstep/admin/v1/admin_pb.ts";
import { adminClient } from "./clients.ts";
import type { PreviousActivation } from "./node-state.ts";

// Writer fencing between activations (docs/operations.md "What the fencing guarantees"). The
// sequencer refuses an old writer's epoch once it has heard the new one, but it cannot reach a
// process that never contacts it again: an old sequencer (nobody above it), or an old participant
// that went passive and waits on its database. So each activation records where its process runs
// (node_state.writer_endpoint), and the next activation, reading that record from its copy of the
// database, tells that process it is stale. Best effort and in the background: it never delays the
// new activation, and it retries until the old process answers (a healed link) or this activation ends.

/** What the recipient did with a notice (FenceWriterResponse.outcome). */
export type FenceOutcome = "fenced" | "same-database" | "not-that-activation";

export interface FenceNotice {
  node: string;
  targetActivation: string;
  writerEpoch: bigint;
  writerActivation: string;
  writerEndpoint: string;
}

function macInput(n: FenceNotice): string {
  return JSON.stringify([
    "lockstep/writer-fence/v1",
    n.node,
    n.targetActivation,
    n.writerEpoch.toString(),
    n.writerActivation,
    n.writerEndpoint,
  ]);
}

/** HMAC-SHA256 of the notice under the node's fence secret (node_state.fence_secret). */
export function fenceMac(secret: Buffer, notice: FenceNotice): Buffer {
  return createHmac("sha256", secret).update(macInput(notice)).digest();
}

export function fenceMacValid(secret: Buffer, notice: FenceNotice, mac: Uint8Array): boolean {
  const expected = fenceMac(secret, notice);
  return mac.length === expected.length && timingSafeEqual(expected, mac);
}

/**
 * The recipient's verdict on an authenticated notice (pure).
 * * Not the process of the target activation (never active, or active since under a newer one) → not-that-activation.
 * * Its own database already carries the sender's epoch: both run on one database (a switch-over,
 *   a passive takeover), where the single-writer lock decides → same-database; it stays as it is.
 * * Otherwise its database is a stale copy (the other site's was promoted) → fenced: it stops
 *   writing for good. (An unreadable database is not judged: receiveFence asks the sender to retry.)
 */
export function judgeFence(input: {
  ownActivation: string | undefined;
  notice: Pick<FenceNotice, "targetActivation" | "writerEpoch">;
  databaseEpoch: bigint;
}): FenceOutcome {
  if (!input.ownActivation || input.ownActivation !== input.notice.targetActivation)
    return "not-that-activation";
  return input.databaseEpoch >= input.notice.writerEpoch ? "same-database" : "fenced";
}

/**
 * The recipient's side: authenticates the notice and judges it. The database's epoch is read with a
 * bound (an unreachable database counts as unread). Throws WRITER_FENCE_REJECTED for a bad MAC.
 */
export async function receiveFence(
  request: FenceWriterRequest,
  own: { node: string; secret: Buffer | undefined; activation: string | undefined },
  databaseEpoch: () => Promise<bigint>,
): Promise<{ outcome: FenceOutcome; notice: FenceNotice; databaseEpoch: bigint | undefined }> {
  const notice: FenceNotice = {
    node: request.node,
    targetActivation: request.targetActivation,
    writerEpoch: request.writerEpoch,
    writerActivation: request.writerActivation,
    writerEndpoint: request.writerEndpoint,
  };
  if (!own.secret || notice.node !== own.node || !fenceMacValid(own.secret, notice, request.mac)) {
    throw new LockstepError("WRITER_FENCE_REJECTED", { node: own.node, sender: notice.writerEndpoint });
  }
  if (own.activation !== notice.targetActivation) {
    return { outcome: "not-that-activation", notice, databaseEpoch: undefined };
  }
  // Unread, the notice cannot be judged: a process cut off from its database may be a healthy
  // replica of the sender's. DB_CONNECTION_LOST is retryable: the sender asks again.
  const epoch = await withTimeout(databaseEpoch(), 2000).catch((error: unknown) => {
    throw new LockstepError("DB_CONNECTION_LOST", {
      database: own.node,
      servers: "this node's storage.url",
      reason: `reading the writer epoch for a fence notice: ${toLockstepError(error).message}`,
    });
  });
  return {
    outcome: judgeFence({ ownActivation: own.activation, notice, databaseEpoch: epoch }),
    notice,
    databaseEpoch: epoch,
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface WriterFencerOptions {
  notice: FenceNotice;
  secret: Buffer;
  /** Where the previous activation's process runs (node_state.writer_endpoint), and its Admin API. */
  target: string;
  client: Client<typeof AdminService>;
  logger: Logger;
  /** Whether this activation still runs; the fencer stops once it does not. */
  current: () => boolean;
  /** Retry delays grow from this (default 250 ms) to maxDelayMs (default 5 s). */
  minDelayMs?: number;
  maxDelayMs?: number;
}

/** The fencer's last result, shown in the log (and `status` of the sender through its logger). */
export type FencerState =
  | { state: "trying"; attempts: number; lastError?: string }
  | { state: FenceOutcome | "rejected" };

/**
 * Sends the notice until the previous process answers. Connection failures (the old site still cut
 * off, its process gone) are retried with backoff; an answer, including WRITER_FENCE_REJECTED, ends it.
 */
export class WriterFencer {
  state: FencerState = { state: "trying", attempts: 0 };
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly done: Promise<FencerState>;
  private resolveDone!: (state: FencerState) => void;

  constructor(private readonly options: WriterFencerOptions) {
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  start(): Promise<FencerState> {
    const { notice, logger } = this.options;
    logger.info(
      { previousActivation: notice.targetActivation, at: this.options.target },
      "fencing the previous activation of this node",
    );
    void this.attempt(this.options.minDelayMs ?? 250);
    return this.done;
  }

  /** For status: which activation, where, and how far. */
  report(): { previousActivation: string; at: string } & FencerState {
    const { notice } = this.options;
    return { previousActivation: notice.targetActivation, at: this.options.target, ...this.state };
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.resolveDone(this.state);
  }

  private async attempt(delayMs: number): Promise<void> {
    if (this.stopped || !this.options.current()) return this.stop();
    const { client, notice, secret, logger } = this.options;
    try {
      const { outcome } = await client.fenceWriter(
        { ...notice, mac: fenceMac(secret, notice) },
        { timeoutMs: 2000 },
      );
      this.finish(outcome as FenceOutcome);
      logger.info({ outcome }, "the previous activation of this node answered the fence notice");
    } catch (error) {
      const failure = fromConnectError(error) ?? toLockstepError(error);
      if (failure.code === "WRITER_FENCE_REJECTED") {
        this.finish("rejected");
        logger.warn({ err: failure }, "the previous activation's process refused the fence notice");
        return;
      }
      const attempts = this.state.state === "trying" ? this.state.attempts + 1 : 1;
      this.state = { state: "trying", attempts, lastError: failure.message };
      if (this.stopped) return;
      this.timer = setTimeout(
        () => void this.attempt(Math.min(delayMs * 2, this.options.maxDelayMs ?? 5000)),
        delayMs,
      );
    }
  }

  private finish(state: FenceOutcome | "rejected"): void {
    this.state = { state };
    this.stopped = true;
    this.resolveDone(this.state);
  }
}

/** The activation that sends the notice: what fencePrevious needs to know of it. */
export interface FencingSender {
  node: string;
  /** Where this process runs (processAddress): a previous activation at the same address is this one. */
  address: string;
  /** The node serves TLS (so the previous process of it does too). */
  tls?: boolean;
  /** Under TLS, the node's own client certificate (nodeClientTls): the notice is the node's call. */
  clientTls?: ClientTlsIdentity;
  secret: Buffer;
  identity: Pick<NodeIdentity, "writerEpoch" | "writerActivation">;
  logger: Logger;
}

/**
 * Tells the process of the activation this one replaced that it is stale, when it ran elsewhere
 * (another address: another host, site, or replica port), in the background. Returns the started
 * fencer, or undefined when there is no other process to tell.
 */
export function fencePrevious(
  previous: PreviousActivation,
  sender: FencingSender,
  current: () => boolean,
): WriterFencer | undefined {
  if (!previous.activation || !previous.endpoint || previous.endpoint === sender.address) return undefined;
  const [host, port] = splitAddress(previous.endpoint);
  const fencer = new WriterFencer({
    notice: {
      node: sender.node,
      targetActivation: previous.activation,
      writerEpoch: sender.identity.writerEpoch,
      writerActivation: sender.identity.writerActivation,
      writerEndpoint: sender.address,
    },
    secret: sender.secret,
    target: previous.endpoint,
    client: adminClient(port, host, {
      tls: sender.tls,
      ...(sender.clientTls ? { clientTls: sender.clientTls } : {}),
    }),
    logger: sender.logger,
    current,
  });
  void fencer.start();
  return fencer;
}

/** `host:port` (IPv6 in brackets) as processAddress writes it. */
function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  return [host, Number(address.slice(at + 1))];
}
