import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import fc from "fast-check";
import { stringify } from "yaml";
import { ConfigError, loadConfig, validateConfig } from "../../src/common/config.ts";
import { isLockstepError } from "../../src/common/errors.ts";

// Property-based checks of config parsing (issue 15 "hostile input"): whatever a config file or the
// LOCKSTEP_* environment says, loading it ends in a config or in CONFIG_INVALID naming the key, never
// in a TypeError. The seed is printed so that a failure can be replayed: FC_SEED=<seed> npx tsx …
const seed = Number(process.env.FC_SEED ?? Date.now() % 2 ** 31);
console.log(`config-fuzz: fast-check seed ${seed} (replay with FC_SEED=${seed})`);
const runs = (numRuns: number): fc.Parameters<unknown> => ({ seed, numRuns });

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A valid config with every optional section filled in, so that every key can be broken. */
function fullConfig(): { [key: string]: Json } {
  return {
    "data-dir": ".lockstep",
    tls: "off",
    admin: { "token-file": "admin-token" },
    synchronizer: {
      id: "sync1",
      parameters: {
        "ledger-time-record-time-tolerance": "60s",
        "participant-response-timeout": "30s",
        "max-deduplication-duration": "7d",
      },
      sequencer: { name: "sequencer1", port: 4001, retention: "7d", "max-inbound-message-size": 67108864 },
      mediator: {
        name: "mediator1",
        port: 4002,
        host: "127.0.0.1",
        storage: { url: "postgres://lockstep@127.0.0.1:5432/m", replication: { check: "warn" } },
      },
      onboarding: "allow-list",
    },
    participants: [
      {
        name: "participant1",
        port: 4011,
        "ledger-api": { auth: { type: "hs256", "secret-file": "jwt-secret" } },
        restore: { "deduplication-recovery": "reject" },
        "max-inbound-message-size": 4194304,
        crypto: { "private-key-encryption": { "wrapper-key-file": "wrapper.key" } },
      },
      { name: "participant2", port: 4021, "ledger-api": { auth: { type: "off" } } },
    ],
    backup: {
      repository: "backups",
      engine: "pg-dump",
      format: "custom",
      "app-hook": "",
      jobs: 2,
      pgbackrest: { type: "incr", "process-max": 2, "compress-type": "zst" },
    },
  };
}

type Path = (string | number)[];

/** Every key path of a JSON value (objects and arrays too, not only leaves). */
function paths(value: Json, prefix: Path = []): Path[] {
  if (value === null || typeof value !== "object") return [prefix];
  const children = Array.isArray(value)
    ? value.map((v, i) => paths(v, [...prefix, i]))
    : Object.entries(value).map(([k, v]) => paths(v, [...prefix, k]));
  return [...(prefix.length > 0 ? [prefix] : []), ...children.flat()];
}

function getIn(value: Json, path: Path): Json {
  return path.reduce<Json>((v, key) => (v as Record<string | number, Json>)[key] as Json, value);
}

function setIn(value: Json, path: Path, replacement: Json): void {
  const parent = getIn(value, path.slice(0, -1)) as Record<string | number, Json>;
  parent[path[path.length - 1] as string | number] = replacement;
}

const scalar = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null));
const nested = fc.oneof(
  fc.array(scalar, { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }),
);

/** A value certainly of the wrong type (or out of range) for a key whose valid value is `valid`. */
function wrongFor(valid: Json): fc.Arbitrary<Json> {
  if (typeof valid === "number")
    // Every numeric key is a non-negative integer: negatives, fractions and other types are wrong.
    return fc.oneof(
      fc.integer({ max: -1 }),
      fc.double({ min: 0.01, max: 1e6, noNaN: true }).filter((d) => !Number.isInteger(d)),
      fc.string({ maxLength: 20 }),
      fc.boolean(),
      fc.constant(null),
      nested,
    );
  if (typeof valid === "string")
    // `tls: off` is a union with an object form ({} is a valid tls): lists and scalars only there.
    return fc.oneof(
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      valid === "off" ? fc.array(scalar, { maxLength: 3 }) : nested,
    ) as fc.Arbitrary<Json>;
  if (Array.isArray(valid))
    return fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.integer(),
      fc.boolean(),
      fc.dictionary(fc.string({ maxLength: 8 }), scalar, { minKeys: 1, maxKeys: 3 }),
    ) as fc.Arbitrary<Json>;
  // An object: a scalar or a list in its place.
  return fc.oneof(
    fc.integer(),
    fc.boolean(),
    fc.array(scalar, { minLength: 1, maxLength: 3 }),
  ) as fc.Arbitrary<Json>;
}

function isConfigInvalid(error: unknown): error is ConfigError {
  return isLockstepError(error) && error.code === "CONFIG_INVALID" && error instanceof ConfigError;
}

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test("the full config used below is valid", () => {
  validateConfig(fullConfig());
});

test("a key of the wrong type gets CONFIG_INVALID naming that key (or the section holding it)", () => {
  const keyPaths = paths(fullConfig()).filter(
    // Strings where null is a legitimate value or any string passes are still broken by non-strings.
    (p) => p.length > 0,
  );
  const mutation = fc
    .constantFrom(...keyPaths)
    .chain((path) => wrongFor(getIn(fullConfig(), path)).map((value) => ({ path, value })));
  fc.assert(
    fc.property(mutation, ({ path, value }) => {
      const config = fullConfig();
      setIn(config, path, value);
      let error: unknown;
      try {
        validateConfig(config);
      } catch (e) {
        error = e;
      }
      assert.ok(isConfigInvalid(error), `${path.join(".")} = ${JSON.stringify(value)}: ${String(error)}`);
      const key = path.join(".");
      // zod reports a broken union (tls, ledger-api.auth) at the union's key: a prefix of ours.
      const named = error.issues.some(
        (i) => i.path !== "" && (key === i.path || key.startsWith(`${i.path}.`)),
      );
      assert.ok(named, `${key} = ${JSON.stringify(value)}: not named in ${error.message}`);
      assert.ok(error.message.includes("Invalid config"), error.message);
    }),
    runs(200),
  );
});

test("random JSON as a whole config: CONFIG_INVALID, never another error", () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
      try {
        validateConfig(value);
      } catch (error) {
        assert.ok(isConfigInvalid(error), `${JSON.stringify(value)}: ${String(error)}`);
        return;
      }
      assert.fail(`accepted ${JSON.stringify(value)}`);
    }),
    runs(150),
  );
});

/** Each level ten aliases of the one before: 10^9 x's if yaml expanded them all (it stops at maxAliasCount). */
function billionLaughs(): string {
  const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
  for (let i = 1; i < 9; i++)
    levels.push(
      `l${i}: &l${i} [${Array(10)
        .fill(i === 1 ? "*a" : `*l${i - 1}`)
        .join(", ")}]`,
    );
  return levels.join("\n");
}

/** Config-file text: broken YAML, YAML of the wrong shape, a valid config with a key replaced. */
const configText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.jsonValue({ maxDepth: 3 }).map((v) => stringify(v)),
  fc.constantFrom(
    "synchronizer: [",
    "a: b: c",
    "- - -",
    "{",
    "participants: *x",
    "\t\tport: 1",
    "---\n...",
    billionLaughs(),
  ),
  fc.constantFrom(...paths(fullConfig()).filter((p) => p.length > 0)).chain((path) =>
    wrongFor(getIn(fullConfig(), path)).map((value) => {
      const config = fullConfig();
      setIn(config, path, value);
      return stringify(config);
    }),
  ),
);

/** LOCKSTEP_* variables naming real keys, with values of any kind. */
const envVars = fc.dictionary(
  fc.constantFrom(
    "LOCKSTEP_SYNCHRONIZER_SEQUENCER_PORT",
    "LOCKSTEP_SYNCHRONIZER_SEQUENCER_MAX_INBOUND_MESSAGE_SIZE",
    "LOCKSTEP_PARTICIPANTS_0_PORT",
    "LOCKSTEP_PARTICIPANTS_7_NAME",
    "LOCKSTEP_PARTICIPANTS",
    "LOCKSTEP_BACKUP",
    "LOCKSTEP_BACKUP_JOBS",
    "LOCKSTEP_TLS",
    "LOCKSTEP_SYNCHRONIZER_PARAMETERS_PARTICIPANT_RESPONSE_TIMEOUT",
  ),
  fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom("[1,", "{a: 1}", "-5", "1e400", "null", "~", "[]")),
  { maxKeys: 3 },
);

test("loadConfig: broken files and LOCKSTEP_* values end in a config or CONFIG_INVALID", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-config-fuzz-"));
  dirs.push(dir);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(configText, envVars, async (text, env) => {
      const path = join(dir, `c${n++}.yaml`);
      writeFileSync(path, text);
      try {
        await loadConfig({ path, env });
      } catch (error) {
        assert.ok(
          isConfigInvalid(error),
          `${JSON.stringify(text)} with ${JSON.stringify(env)}: ${(error as Error)?.stack ?? String(error)}`,
        );
      }
    }),
    runs(200),
  );
});

/** Valid variations: other names, ports, durations and optional keys still parse. */
const validConfig = fc
  .record({
    id: fc.stringMatching(/^[a-z][a-z0-9_-]{0,15}$/),
    base: fc.integer({ min: 1, max: 60000 }),
    participants: fc.integer({ min: 0, max: 4 }),
    tolerance: fc.constantFrom("1s", "90s", "10m", "2h", "1d"),
    limit: fc.option(fc.integer({ min: 1024, max: 0xffffffff }), { nil: undefined }),
    onboarding: fc.constantFrom("open", "allow-list"),
    jobs: fc.integer({ min: 1, max: 64 }),
  })
  .map((v) => ({
    synchronizer: {
      id: v.id,
      parameters: { "ledger-time-record-time-tolerance": v.tolerance },
      sequencer: {
        name: "sequencer1",
        port: v.base,
        ...(v.limit === undefined ? {} : { "max-inbound-message-size": v.limit }),
      },
      mediator: { name: "mediator1", port: v.base + 1 },
      onboarding: v.onboarding,
    },
    participants: Array.from({ length: v.participants }, (_, i) => ({
      name: `participant${i + 1}`,
      port: v.base + 2 + i,
      "ledger-api": { auth: { type: "off" } },
    })),
    backup: { jobs: v.jobs },
  }));

test("valid configs still parse, and keep what they say", () => {
  fc.assert(
    fc.property(validConfig, (input) => {
      const config = validateConfig(input);
      assert.equal(config.synchronizer.id, input.synchronizer.id);
      assert.equal(config.participants.length, input.participants.length);
      assert.equal(
        config.synchronizer.sequencer["max-inbound-message-size"],
        input.synchronizer.sequencer["max-inbound-message-size"],
      );
    }),
    runs(150),
  );
});
