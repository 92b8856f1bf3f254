import { randomBytes } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import type { LockstepConfig } from "./config-schema.ts";
import { LockstepError } from "./errors.ts";

/**
 * The Admin API's bearer token (docs/security.md "Admin API"): one per network, in a file the nodes
 * and the CLI read (`admin.token-file`, else <data-dir>/admin-token, created owner-only on first
 * use), or for the CLI in $LOCKSTEP_ADMIN_TOKEN. Clients attach it to admin calls only, so a Ledger
 * API call never carries it. The server side is src/node/admin-token.ts.
 */

/** The services and methods behind the admin token ("Service" = all its methods). */
export const ADMIN_PROCEDURES: ReadonlySet<string> = new Set([
  "lockstep.admin.v1.AdminService",
  "lockstep.admin.v1.KeyAdminService",
  // The sequencer's operator calls; members' own calls (Send, Subscribe, Acknowledge, RegisterMember,
  // SubmitTopology) are authenticated by their signatures instead; GetTopology and GetMemberEvent
  // are open (GetMemberEvent answers the event itself to the admin only: ADMIN_REVEALED).
  "lockstep.sequencer.v1.SequencerService/Prune",
  "lockstep.sequencer.v1.SequencerService/GetSequencerStatus",
  "lockstep.sequencer.v1.SequencerService/PauseIntake",
  "lockstep.sequencer.v1.SequencerService/ResumeIntake",
  "lockstep.sequencer.v1.SequencerService/SetRetentionHolds",
  "lockstep.sequencer.v1.SequencerService/ReleaseRetentionHolds",
  "lockstep.sequencer.v1.SequencerService/LowerAcknowledgement",
  // The permissioned synchronizer's allow-list (docs/security.md "Permissioned synchronizer").
  "lockstep.sequencer.v1.SequencerService/AdmitMember",
  "lockstep.sequencer.v1.SequencerService/RevokeMember",
  "lockstep.sequencer.v1.SequencerService/ListMemberAdmissions",
]);

/**
 * Calls of an admin service that authenticate themselves instead. FenceWriter: a newer activation's
 * notice to a stale copy of the same node, MAC'd with that node's own secret (node/writer-fencing.ts).
 * It must reach a copy restored on another host or data dir, whose admin token is another: behind
 * the token, that copy would never learn it is stale and two copies would stay active.
 */
const SELF_AUTHENTICATED: ReadonlySet<string> = new Set(["lockstep.admin.v1.AdminService/FenceWriter"]);

/**
 * Open calls whose answer holds a secret part that only the admin gets. GetMemberEvent: a member's
 * epoch and positions are what a restarting member needs before it can sign anything (its writer
 * epoch), but the event delivered to it is another member's confidential traffic (Canton delivers
 * events only on the member's authenticated subscription): restore and backup checks, which compare
 * it, run with the admin token.
 */
export const ADMIN_REVEALED: ReadonlySet<string> = new Set([
  "lockstep.sequencer.v1.SequencerService/GetMemberEvent",
]);

export function isAdminRevealed(service: string, method: string): boolean {
  return ADMIN_REVEALED.has(`${service}/${method}`);
}

export function isAdminProcedure(service: string, method: string): boolean {
  const procedure = `${service}/${method}`;
  if (SELF_AUTHENTICATED.has(procedure)) return false;
  return ADMIN_PROCEDURES.has(service) || ADMIN_PROCEDURES.has(procedure);
}

export const ADMIN_TOKEN_ENV = "LOCKSTEP_ADMIN_TOKEN";

/** Where the network's token is kept: the configured file, else <data-dir>/admin-token. */
export function adminTokenFile(config: LockstepConfig, dataDir = config["data-dir"]): string {
  return config.admin?.["token-file"] ?? join(dataDir, "admin-token");
}

/** The token in `path`; undefined when the file does not exist. */
export function readAdminTokenFile(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new LockstepError("CONFIG_INVALID", {
      details: `admin token file ${path}: ${(error as Error).message}`,
    });
  }
  const token = text.trim();
  if (token.length < 16)
    throw new LockstepError("CONFIG_INVALID", {
      details: `admin token file ${path} holds no token of at least 16 characters`,
    });
  return token;
}

/**
 * The token in `path`, created (256 random bits, hex, mode 0600) when absent. Several nodes may
 * start at once: the file is written aside and linked into place, so each sees one whole token.
 */
export function ensureAdminTokenFile(path: string): string {
  const existing = readAdminTokenFile(path);
  if (existing) return existing;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const aside = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(aside, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  chmodSync(aside, 0o600);
  try {
    linkSync(aside, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    rmSync(aside, { force: true });
  }
  return readAdminTokenFile(path) as string;
}

// The token per node origin (host:port), read lazily: the CLI learns the config before `up` creates
// the file. A server in this process knows its own token for certain, so it wins over a config's.
const served = new Map<string, () => string | undefined>();
const configured = new Map<string, () => string | undefined>();

/**
 * Calls to these origins carry the token `resolve` returns: a node process registers its own
 * server (`served`) and its config's nodes, the CLI its config's nodes.
 */
export function registerAdminToken(
  hostPorts: readonly string[],
  resolve: () => string | undefined,
  options: { served?: boolean } = {},
): void {
  let cached: string | undefined;
  const once = () => {
    cached ??= resolve();
    return cached;
  };
  const map = options.served ? served : configured;
  for (const hostPort of hostPorts) map.set(hostPort.toLowerCase(), once);
  // Any other address (a replica's own port, a previous writer being fenced): the network's token too.
  fallback = once;
}

let fallback: (() => string | undefined) | undefined;

/** The token for a call to `url`: $LOCKSTEP_ADMIN_TOKEN, else the one registered for its origin. */
export function adminTokenFor(url: string): string | undefined {
  const fromEnv = process.env[ADMIN_TOKEN_ENV]?.trim();
  if (fromEnv) return fromEnv;
  try {
    const host = new URL(url).host.toLowerCase();
    return (served.get(host) ?? configured.get(host) ?? fallback)?.();
  } catch {
    return undefined;
  }
}

/** Client interceptor: admin calls carry `Authorization: Bearer <admin token>` unless one is set. */
export const adminCredentials: Interceptor = (next) => (req) => {
  const { typeName } = req.service;
  const admin = isAdminProcedure(typeName, req.method.name) || isAdminRevealed(typeName, req.method.name);
  if (admin && !req.header.has("authorization")) {
    const token = adminTokenFor(req.url);
    if (token) req.header.set("authorization", `Bearer ${token}`);
  }
  return next(req);
};
