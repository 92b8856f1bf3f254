import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { NodeEntry } from "../common/config-schema.ts";
import { crashPoint } from "../common/crash-points.ts";
import { LockstepError } from "../common/errors.ts";
import type { Logger } from "../common/logging.ts";
import { END_OF_TIME, type Micros } from "../common/time.ts";
import { KeyAdminService, type KeyInfoSchema } from "../gen/lockstep/admin/v1/keys_pb.ts";
import { backupsTaken } from "../storage/backups-taken.ts";
import type { Db } from "../storage/db.ts";
import { announceMapping, type OwnTopology, revokeMapping } from "./key-rotation.ts";
import { KeyStore, type StoredKey } from "./key-store.ts";
import { privateKeyProtection } from "./key-wrapping.ts";
import type { TopologyState } from "./topology.ts";
import { retireWrapperKey, rewrapPrivateKeys, wrapperKeyInfos } from "./wrapper-key-admin.ts";

export interface KeyAdminDeps {
  node: string;
  /** config.synchronizer.id, named in errors. */
  synchronizer: string;
  db: Db;
  keys: KeyStore;
  topology: OwnTopology;
  logger: Logger;
}

/**
 * The node's side of key rotation (docs/keys.md): it, not the operator's tooling, refuses to
 * announce a pending key or revoke the previous one until a completed backup registered in its own
 * database (backups_taken) holds the new key. Every step is idempotent and ends with the store in
 * line with topology, so a rotation interrupted anywhere is finished by running it again.
 */
export class KeyAdmin {
  private readonly log: Logger;

  constructor(readonly deps: KeyAdminDeps) {
    this.log = deps.logger.child({ component: "key-admin" });
  }

  /** The member id; before the node registered (it is still starting) a retryable refusal. */
  private member(): string {
    try {
      return this.deps.topology.member();
    } catch {
      throw new LockstepError("NOT_CONNECTED_TO_SYNCHRONIZER", {
        synchronizer: this.deps.synchronizer,
        reason: `${this.deps.node} has not registered with its sequencer yet`,
      });
    }
  }

  private listed(): string[] {
    return this.deps.topology
      .topology()
      .signingKeysOf(this.member(), END_OF_TIME)
      .map((k) => k.fingerprint);
  }

  async list(): Promise<{
    member: string;
    keys: MessageInitShape<typeof KeyInfoSchema>[];
    overrides: { at: string; action: string; fingerprint: string; warning: string }[];
  }> {
    const [stored, backups, overrides] = await Promise.all([
      this.deps.keys.list(),
      backupsTaken(this.deps.db),
      this.deps.keys.overrides(),
    ]);
    let member = "";
    let listed = new Set<string>();
    try {
      member = this.member();
      listed = new Set(this.listed());
    } catch {
      // Not registered yet: no key is in topology.
    }
    return {
      member,
      keys: stored.map((k) => ({
        fingerprint: k.fingerprint,
        purpose: k.purpose,
        state: k.state,
        createdAt: k.createdAt.toISOString(),
        activatedAt: k.activatedAt?.toISOString() ?? "",
        revokedAt: k.revokedAt?.toISOString() ?? "",
        backupSets: backups
          .filter((b) => b.safe && b.keyFingerprints.includes(k.fingerprint))
          .map((b) => b.setId),
        inTopology: k.purpose === "namespace" ? member !== "" : listed.has(k.fingerprint),
        wrapperFingerprint: k.wrapperFingerprint ?? "",
      })),
      overrides: overrides.map((o) => ({ ...o, at: o.at.toISOString() })),
    };
  }

  /** The pending signing key, generated and stored if there is none. */
  generate(): Promise<{ key: StoredKey; generated: boolean }> {
    return this.deps.keys.pendingSigningKey();
  }

  async announce(
    fingerprint: string,
    force: boolean,
  ): Promise<{ effectiveAt: Micros; alreadyAnnounced: boolean; warning: string }> {
    const key = await this.signingKey(fingerprint);
    if (this.listed().includes(fingerprint)) {
      await this.reconcile();
      return { effectiveAt: 0n, alreadyAnnounced: true, warning: "" };
    }
    if (key.state !== "pending") {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `key ${fingerprint} is ${key.state}: only a pending key is announced`,
      });
    }
    const warning = await this.requireBackedUp(fingerprint, "announce", force);
    const member = this.member();
    const topology = this.deps.topology.topology();
    const mapping = announceMapping(
      member,
      await this.deps.keys.namespaceKey(),
      topology.signingKeysOf(member, END_OF_TIME),
      key,
    );
    if (!mapping) throw new LockstepError("INTERNAL_ERROR", { details: "announce mapping of a listed key" });
    const effectiveAt = await this.sequence(topology, mapping);
    crashPoint("key-announced");
    await this.reconcile();
    this.log.info({ fingerprint, effectiveAt: String(effectiveAt) }, "signing key announced and active");
    return { effectiveAt, alreadyAnnounced: false, warning };
  }

  async revoke(
    keep: string,
    force: boolean,
  ): Promise<{ effectiveAt: Micros; revoked: string[]; warning: string }> {
    const key = await this.signingKey(keep);
    if (key.state === "revoked") {
      throw new LockstepError("INVALID_ARGUMENT", { details: `key ${keep} is revoked: it cannot be kept` });
    }
    const member = this.member();
    const topology = this.deps.topology.topology();
    const plan = revokeMapping(
      member,
      await this.deps.keys.namespaceKey(),
      topology.signingKeysOf(member, END_OF_TIME),
      keep,
    );
    if (plan === "keep-not-listed") {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `key ${keep} is not in topology yet: announce it before revoking the others`,
      });
    }
    if (plan === undefined) {
      // Topology lists only `keep` already (e.g. a rerun after the revocation took effect).
      const changed = await this.reconcile();
      return {
        effectiveAt: 0n,
        revoked: changed.filter((t) => t.to === "revoked").map((t) => t.fingerprint),
        warning: "",
      };
    }
    const warning = await this.requireBackedUp(keep, "revoke", force);
    const effectiveAt = await this.sequence(topology, plan.mapping);
    crashPoint("key-revoked");
    await this.reconcile();
    this.log.info({ keep, revoked: plan.revoked, effectiveAt: String(effectiveAt) }, "signing keys revoked");
    return { effectiveAt, revoked: plan.revoked, warning };
  }

  /** Store states in line with topology (pending listed → active, active unlisted → revoked). */
  async reconcile(): Promise<{ fingerprint: string; to: string }[]> {
    const changed = await this.deps.keys.reconcile(this.listed());
    if (changed.length > 0) {
      this.log.info({ changed }, "key store brought in line with topology");
      await this.deps.topology.keysChanged?.();
    }
    return changed;
  }

  private async signingKey(fingerprint: string): Promise<StoredKey> {
    const key = await this.deps.keys.get(fingerprint);
    if (!key) throw new LockstepError("SECRET_KEY_NOT_IN_STORE", { fingerprint });
    if (key.purpose !== "signing") {
      throw new LockstepError("INVALID_ARGUMENT", {
        details: `key ${fingerprint} is a ${key.purpose} key: only signing keys rotate`,
      });
    }
    return key;
  }

  /**
   * The rule: a completed, safe backup set registered in this node holds the key. With force, the step
   * goes on and the override is recorded with its warning.
   */
  private async requireBackedUp(
    fingerprint: string,
    action: "announce" | "revoke",
    force: boolean,
  ): Promise<string> {
    const backups = await backupsTaken(this.deps.db);
    // A set found unsafe (a fork) is refused by restore plan without --force: it does not count.
    if (backups.some((b) => b.safe && b.keyFingerprints.includes(fingerprint))) return "";
    const verb = action === "announce" ? "announcing it" : "revoking the previous key";
    if (!force)
      throw new LockstepError("KEY_NOT_BACKED_UP", { node: this.deps.node, fingerprint, action: verb });
    const warning = `${verb} without a backup that holds key ${fingerprint}: a restore from any existing set comes back without it (MISSING_PRIVATE_KEY)`;
    await this.deps.keys.recordOverride({ action, fingerprint, warning });
    this.log.warn({ fingerprint, action }, warning);
    return warning;
  }

  private async sequence(
    topology: TopologyState,
    mapping: Parameters<TopologyState["issue"]>[0],
  ): Promise<Micros> {
    const signed = topology.issue(mapping, await this.deps.keys.namespaceKey());
    const at = await this.deps.topology.submit([signed]);
    await this.deps.topology.awaitEffective(at);
    return at;
  }
}

/** The node's key store, keys sealed under its wrapper key when the config asks for it. */
export function nodeKeyStore(db: Db, entry: NodeEntry): KeyStore {
  return new KeyStore(db, privateKeyProtection(entry.name, entry.config.crypto));
}

/** Registers lockstep.admin.v1.KeyAdminService for the node's active process. */
export function keyAdminRoutes(admin: () => KeyAdmin): (router: ConnectRouter) => void {
  const deps = () => admin().deps;
  return (router) => {
    router.service(KeyAdminService, {
      listKeys: async () => {
        const listed = await admin().list();
        return { ...listed, wrapperKeys: await wrapperKeyInfos(deps()) };
      },
      generateSigningKey: async () => {
        const { key, generated } = await admin().generate();
        const listed = await admin().list();
        return { key: listed.keys.find((k) => k.fingerprint === key.fingerprint), generated };
      },
      announceSigningKey: (request) => admin().announce(request.fingerprint, request.force),
      revokeSigningKeys: (request) => admin().revoke(request.keepFingerprint, request.force),
      rewrapPrivateKeys: (request) => rewrapPrivateKeys(deps(), request.wrapperKeyFile),
      retireWrapperKey: (request) => retireWrapperKey(deps(), request.fingerprint, request.force),
    });
  };
}
