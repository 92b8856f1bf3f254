import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import type { LoadConfigOptions } from "../../src/common/config.ts";
import { ConfigError, exampleConfig, loadConfig, normalizedConfigYaml } from "../../src/common/config.ts";
import { configNodes, type NodeEntry } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import { type EndpointConfig, nodeEndpoint } from "../../src/common/node-endpoint.ts";

const EXAMPLE = `data-dir: .lockstep                  # embedded PostgreSQL, logs, pid files
synchronizer:
  id: sync1
  parameters:
    ledger-time-record-time-tolerance: 60s
  sequencer: { name: sequencer1, port: 4001 }
  mediator:  { name: mediator1,  port: 4002 }
participants:
  - { name: participant1, port: 4011 }
  - { name: participant2, port: 4021 }
backup:
  repository: backups                # a directory
  format: custom                     # tar | custom | directory
  app-hook: ""                       # optional command run first
`;

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-config-"));
  dirs.push(dir);
  return dir;
}

/** Writes `text` as lockstep.yaml in a fresh dir and loads it with an empty environment by default. */
function load(text: string, options: Omit<LoadConfigOptions, "path"> = {}) {
  const dir = tempDir();
  const path = join(dir, "lockstep.yaml");
  writeFileSync(path, text);
  return { dir, loading: loadConfig({ path, env: {}, ...options }) };
}

/** The issues of a config that must fail, as `path: message` lines. */
async function issuesOf(text: string, options: Omit<LoadConfigOptions, "path"> = {}): Promise<ConfigError> {
  const error = await load(text, options).loading.then(
    () => assert.fail("expected CONFIG_INVALID"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ConfigError, String(error));
  assert.ok(isLockstepError(error, "CONFIG_INVALID"));
  assert.equal(error.exitCode, 2);
  return error;
}

function hasIssue(error: ConfigError, path: string, message: RegExp): void {
  const found = error.issues.find((i) => i.path === path && message.test(i.message));
  assert.ok(found, `no issue at ${path} matching ${message}; got ${JSON.stringify(error.issues)}`);
  assert.ok(error.message.includes(`${path}: `), `message names ${path}: ${error.message}`);
}

test("the docs/cli.md example loads with defaults filled and paths resolved against the config's dir", async () => {
  const { dir, loading } = load(EXAMPLE);
  const { config, path, baseDir, warnings } = await loading;
  assert.equal(path, join(dir, "lockstep.yaml"));
  assert.equal(baseDir, dir);
  assert.deepEqual(warnings, []);
  assert.equal(config["data-dir"], join(dir, ".lockstep"));
  assert.equal(config.backup.repository, join(dir, "backups"));
  assert.deepEqual(config.synchronizer.parameters, {
    "ledger-time-record-time-tolerance": 60_000,
    "participant-response-timeout": 30_000,
    "max-deduplication-duration": 7 * 86_400_000,
  });
  assert.equal(config.backup.jobs, 2);
  assert.deepEqual(config.participants[0]?.storage, {
    replication: { check: "warn", "min-sync-standbys": 1 },
  });
  assert.deepEqual(config.participants[1]?.restore, { "deduplication-recovery": "reject" });
  assert.deepEqual(
    configNodes(config).map((n) => `${n.kind}:${n.name}:${n.port}`),
    [
      "sequencer:sequencer1:4001",
      "mediator:mediator1:4002",
      "participant:participant1:4011",
      "participant:participant2:4021",
    ],
  );
  // Defaults are fresh objects per node, never shared.
  assert.notEqual(config.participants[0]?.storage.replication, config.participants[1]?.storage.replication);
});

test("absolute paths stay as written", async () => {
  const text = EXAMPLE.replace("data-dir: .lockstep", "data-dir: /var/lib/lockstep");
  const { config } = await load(text).loading;
  assert.equal(config["data-dir"], "/var/lib/lockstep");
});

test("every issue is reported with its key path", async () => {
  const text = EXAMPLE.replace("port: 4011", 'port: "4011"')
    .replace("id: sync1", "id: sync1\n  colour: blue")
    .replace("ledger-time-record-time-tolerance: 60s", "ledger-time-record-time-tolerance: abc")
    .replace("format: custom", "format: zip");
  const error = await issuesOf(text);
  hasIssue(error, "participants.0.port", /^expected number, received string$/);
  hasIssue(error, "synchronizer.colour", /^unknown key/);
  hasIssue(error, "synchronizer.parameters.ledger-time-record-time-tolerance", /"abc" is not a duration/);
  hasIssue(error, "backup.format", /^expected one of "tar"\|"custom"\|"directory"/);
  assert.equal(error.issues.length, 4);
  // Issues from the file carry their line.
  assert.equal(error.issues.find((i) => i.path === "synchronizer.colour")?.line, 4);
  assert.match(error.message, /participants\.0\.port: expected number, received string \(line 10\)/);
});

test("backup.engine: pg-dump by default, one of the known engines, overridable per node", async () => {
  const { config } = await load(EXAMPLE).loading;
  assert.equal(config.backup.engine, "pg-dump");
  assert.equal(config.participants[0]?.backup, undefined);
  const text = EXAMPLE.replace("format: custom", "engine: pgbackrest\n  format: custom").replace(
    "{ name: participant2, port: 4021 }",
    "{ name: participant2, port: 4021, backup: { engine: pg-dump } }",
  );
  const mixed = (await load(text).loading).config;
  assert.equal(mixed.backup.engine, "pgbackrest");
  assert.deepEqual(mixed.participants[1]?.backup, { engine: "pg-dump" });
  const error = await issuesOf(
    EXAMPLE.replace("format: custom", "engine: barman").replace(
      "{ name: participant2, port: 4021 }",
      "{ name: participant2, port: 4021, backup: { engine: pg-dump, format: tar } }",
    ),
  );
  hasIssue(error, "backup.engine", /^expected one of "pg-dump"\|"pgbackrest"/);
  hasIssue(error, "participants.1.backup.format", /^unknown key/);
});

test("a missing required key and an invalid storage url are named", async () => {
  const text = EXAMPLE.replace("  mediator:  { name: mediator1,  port: 4002 }\n", "").replace(
    "{ name: participant2, port: 4021 }",
    "{ name: participant2, port: 4021, storage: { url: 'localhost:5432' } }",
  );
  const error = await issuesOf(text);
  hasIssue(error, "synchronizer.mediator", /^missing \(expected object\)$/);
  hasIssue(error, "participants.1.storage.url", /postgres:\/\//);
});

test("duplicate node names and ports are reported at the later node", async () => {
  const error = await issuesOf(EXAMPLE.replace("participant2, port: 4021", "participant1, port: 4002"));
  hasIssue(error, "participants.1.name", /duplicate node name "participant1" \(also at participants\.0\)/);
  hasIssue(error, "participants.1.port", /port 4002 is also used by mediator1/);
});

test("bad node names and out-of-range ports are refused", async () => {
  const error = await issuesOf(
    EXAMPLE.replace("name: sequencer1, port: 4001", "name: Sequencer, port: 70000"),
  );
  hasIssue(error, "synchronizer.sequencer.name", /lower case/);
  hasIssue(error, "synchronizer.sequencer.port", /65535/);
});

test("a YAML syntax error is CONFIG_INVALID with line and column", async () => {
  const error = await issuesOf(EXAMPLE.replace("  id: sync1", "  id: sync1\n  id: sync2"));
  assert.equal(error.issues[0]?.line, 4);
  assert.match(error.message, /^Invalid config: line 4, column 3: /);

  const unclosed = await issuesOf("synchronizer: { id: sync1\nparticipants: []\n");
  assert.ok(unclosed.issues.every((i) => typeof i.line === "number" && typeof i.column === "number"));
});

test("a config that is not a mapping is refused", async () => {
  const error = await issuesOf("- a\n- b\n");
  assert.match(error.message, /\(root\): expected a mapping/);
});

test("a missing file is CONFIG_NOT_FOUND", async () => {
  const path = join(tmpdir(), "lockstep-does-not-exist", "lockstep.yaml");
  await assert.rejects(loadConfig({ path, env: {} }), (e: unknown) => {
    assert.ok(isLockstepError(e, "CONFIG_NOT_FOUND"));
    assert.equal(e.metadata.path, path);
    assert.equal(e.exitCode, 2);
    return true;
  });
});

test("$LOCKSTEP_CONFIG names the file when no path is given", async () => {
  const { dir } = load(EXAMPLE);
  const { path } = await loadConfig({ env: { LOCKSTEP_CONFIG: join(dir, "lockstep.yaml") } });
  assert.equal(path, join(dir, "lockstep.yaml"));
});

test("environment overrides: scalar, nested, hyphenated and by list index", async () => {
  const { dir, loading } = load(EXAMPLE, {
    env: {
      LOCKSTEP_DATA_DIR: "state",
      LOCKSTEP_BACKUP_REPOSITORY: "/srv/backups",
      LOCKSTEP_BACKUP_APP_HOOK: "",
      LOCKSTEP_BACKUP_JOBS: "4",
      LOCKSTEP_SYNCHRONIZER_SEQUENCER_PORT: "5001",
      LOCKSTEP_SYNCHRONIZER_PARAMETERS_LEDGER_TIME_RECORD_TIME_TOLERANCE: "2m",
      LOCKSTEP_PARTICIPANTS_0_PORT: "5011",
      LOCKSTEP_PARTICIPANTS_1_STORAGE_REPLICATION_MIN_SYNC_STANDBYS: "2",
      LOCKSTEP_LOG_LEVEL: "debug",
      LOCKSTEP_CONFIG: "ignored-because-path-is-given.yaml",
      HOME: "/not/a/config/key",
    },
  });
  const { config, warnings } = await loading;
  assert.deepEqual(warnings, []);
  assert.equal(config["data-dir"], join(dir, "state"));
  assert.equal(config.backup.repository, "/srv/backups");
  assert.equal(config.backup["app-hook"], "");
  assert.equal(config.backup.jobs, 4);
  assert.equal(config.synchronizer.sequencer.port, 5001);
  assert.equal(config.synchronizer.parameters["ledger-time-record-time-tolerance"], 120_000);
  assert.equal(config.participants[0]?.port, 5011);
  assert.equal(config.participants[1]?.storage.replication["min-sync-standbys"], 2);
});

test("an invalid environment value names the key and the variable", async () => {
  const error = await issuesOf(EXAMPLE, { env: { LOCKSTEP_PARTICIPANTS_0_PORT: "eleven" } });
  hasIssue(
    error,
    "participants.0.port",
    /expected number, received string \(from LOCKSTEP_PARTICIPANTS_0_PORT\)/,
  );
});

test("an environment list index past the end is an error, one at the end appends", async () => {
  const error = await issuesOf(EXAMPLE, { env: { LOCKSTEP_PARTICIPANTS_5_PORT: "5000" } });
  hasIssue(error, "participants.5", /LOCKSTEP_PARTICIPANTS_5_PORT names element 5 but participants has 2/);

  const { config } = await load(EXAMPLE, {
    env: { LOCKSTEP_PARTICIPANTS_2_NAME: "participant3", LOCKSTEP_PARTICIPANTS_2_PORT: "4031" },
  }).loading;
  assert.deepEqual(
    config.participants.map((p) => p.name),
    ["participant1", "participant2", "participant3"],
  );
});

test("an unknown LOCKSTEP_ variable is a warning, not an error", async () => {
  const { warnings } = await load(EXAMPLE, {
    env: { LOCKSTEP_BACKUP_COLOUR: "blue", LOCKSTEP_PARTICIPANTS_X_PORT: "1", LOCKSTEP_LOG_LEVEL: "info" },
  }).loading;
  assert.equal(warnings.length, 2);
  assert.match(warnings[0] ?? "", /LOCKSTEP_BACKUP_COLOUR names no config key/);
  assert.match(warnings[1] ?? "", /LOCKSTEP_PARTICIPANTS_X_PORT/);
});

test("overrides apply after the environment", async () => {
  const { config } = await load(EXAMPLE, {
    env: { LOCKSTEP_DATA_DIR: "from-env" },
    overrides: { "data-dir": "/from/flag", "participants.1.port": 4999 },
  }).loading;
  assert.equal(config["data-dir"], "/from/flag");
  assert.equal(config.participants[1]?.port, 4999);
});

test("a config in a subdirectory resolves relative paths against that directory", async () => {
  const dir = tempDir();
  mkdirSync(join(dir, "etc"));
  writeFileSync(
    join(dir, "etc", "net.yaml"),
    EXAMPLE.replace("repository: backups", "repository: ../backups"),
  );
  const { config, baseDir } = await loadConfig({ path: join(dir, "etc", "net.yaml"), env: {} });
  assert.equal(baseDir, join(dir, "etc"));
  assert.equal(config["data-dir"], join(dir, "etc", ".lockstep"));
  assert.equal(config.backup.repository, join(dir, "backups"));
});

test("exampleConfig builds the docs/cli.md network, with port overrides", () => {
  const config = exampleConfig("/tmp/demo");
  assert.equal(config["data-dir"], "/tmp/demo");
  assert.equal(config.synchronizer.id, "sync1");
  assert.deepEqual(
    configNodes(config).map((n) => `${n.name}:${n.port}`),
    ["sequencer1:4001", "mediator1:4002", "participant1:4011", "participant2:4021"],
  );
  const moved = exampleConfig("/tmp/demo", {
    sequencer: 5001,
    mediator: 5002,
    participants: [5011, 5021, 5031],
  });
  assert.deepEqual(
    configNodes(moved).map((n) => `${n.name}:${n.port}`),
    ["sequencer1:5001", "mediator1:5002", "participant1:5011", "participant2:5021", "participant3:5031"],
  );
  assert.throws(() => exampleConfig("/tmp/demo", { sequencer: 5001, mediator: 5001 }), ConfigError);
});

test("normalizedConfigYaml writes durations canonically and loads back to the same config", async () => {
  const { config } = await load(EXAMPLE).loading;
  const yaml = normalizedConfigYaml(config);
  const parsed = parse(yaml) as { synchronizer: { parameters: Record<string, string> } };
  assert.deepEqual(parsed.synchronizer.parameters, {
    "ledger-time-record-time-tolerance": "1m",
    "participant-response-timeout": "30s",
    "max-deduplication-duration": "7d",
  });
  const again = await load(yaml).loading;
  assert.deepEqual(again.config, config);
});

test("host and address default to 127.0.0.1 and the node's port", async () => {
  const { config } = await load(EXAMPLE).loading;
  assert.equal(config.synchronizer.sequencer.host, "127.0.0.1");
  assert.equal(config.synchronizer.sequencer.address, undefined);
  assert.deepEqual(nodeEndpoint(config.synchronizer.sequencer), {
    bindHost: "127.0.0.1",
    bindPort: 4001,
    host: "127.0.0.1",
    port: 4001,
    address: "127.0.0.1:4001",
    url: "http://127.0.0.1:4001",
    tls: false,
  });
  // A replica's own port: bound on the node's host, reached there too.
  assert.equal(nodeEndpoint(configNodes(config)[2] as NodeEntry, 4111).url, "http://127.0.0.1:4111");
});

test("the address defaults to the host, to 127.0.0.1 for a wildcard, and may name another host and port", async () => {
  const text = EXAMPLE.replace(
    "{ name: sequencer1, port: 4001 }",
    "{ name: sequencer1, port: 4001, host: 10.0.0.5 }",
  )
    .replace("{ name: mediator1,  port: 4002 }", "{ name: mediator1, port: 4002, host: 0.0.0.0 }")
    .replace(
      "{ name: participant1, port: 4011 }",
      "{ name: participant1, port: 4011, host: '::', address: 'p1.site-b.example:5011' }",
    )
    .replace(
      "{ name: participant2, port: 4021 }",
      "{ name: participant2, port: 4021, address: '[fd00::7]' }",
    );
  const { config } = await load(text).loading;
  const urls = configNodes(config).map((n) => `${nodeEndpoint(n).bindHost} ${nodeEndpoint(n).url}`);
  assert.deepEqual(urls, [
    "10.0.0.5 http://10.0.0.5:4001",
    "0.0.0.0 http://127.0.0.1:4002",
    ":: http://p1.site-b.example:5011",
    "127.0.0.1 http://[fd00::7]:4021",
  ]);
  // A replica's port replaces the address's port, not its host.
  assert.equal(nodeEndpoint(configNodes(config)[2] as NodeEntry, 4111).url, "http://p1.site-b.example:4111");
});

test("a host or address that is not one is refused with the reason", async () => {
  const text = EXAMPLE.replace(
    "{ name: sequencer1, port: 4001 }",
    "{ name: sequencer1, port: 4001, host: '10.0.0.5:4001' }",
  )
    .replace("{ name: mediator1,  port: 4002 }", "{ name: mediator1, port: 4002, host: 127.0.0.300 }")
    .replace("{ name: participant1, port: 4011 }", "{ name: participant1, port: 4011, address: 0.0.0.0 }")
    .replace("{ name: participant2, port: 4021 }", "{ name: participant2, port: 4021, address: 'p2:99999' }");
  const error = await issuesOf(text);
  hasIssue(error, "synchronizer.sequencer.host", /not an IP address or a host name \(no port/);
  hasIssue(error, "synchronizer.mediator.host", /"127\.0\.0\.300" is not an IPv4 address/);
  hasIssue(error, "participants.0.address", /every address of a machine, which nobody can dial/);
  hasIssue(error, "participants.1.address", /port must be a number from 1 to 65535/);
  assert.equal(error.issues.length, 4);
  const brackets = await issuesOf(EXAMPLE.replace("port: 4021 }", "port: 4021, address: '[p2]:4021' }"));
  hasIssue(brackets, "participants.1.address", /only an IPv6 address goes in brackets/);
});

test("a port may repeat on different hosts, never on the same one or beside a wildcard", async () => {
  const twoHosts = EXAMPLE.replace(
    "{ name: participant1, port: 4011 }",
    "{ name: participant1, port: 4011, host: 10.0.0.1 }",
  ).replace("{ name: participant2, port: 4021 }", "{ name: participant2, port: 4011, host: 10.0.0.2 }");
  const { config } = await load(twoHosts).loading;
  assert.deepEqual(
    config.participants.map((p) => nodeEndpoint(p).address),
    ["10.0.0.1:4011", "10.0.0.2:4011"],
  );

  const sameHost = await issuesOf(twoHosts.replace("host: 10.0.0.2", "host: 10.0.0.1"));
  hasIssue(sameHost, "participants.1.port", /^port 4011 is also used by participant1 on 10\.0\.0\.1$/);
  const wildcard = await issuesOf(twoHosts.replace("host: 10.0.0.1", "host: 0.0.0.0"));
  hasIssue(wildcard, "participants.1.port", /participant1 binds 0\.0\.0\.0: every address of the machine/);
  // A wildcard with an address stands on the machine that address names.
  const elsewhere = twoHosts.replace("host: 10.0.0.1 }", "host: 0.0.0.0, address: 10.0.0.1 }");
  assert.equal((await load(elsewhere).loading).config.participants[0]?.host, "0.0.0.0");
  const sameMachine = await issuesOf(elsewhere.replace("host: 10.0.0.2", "host: 10.0.0.1"));
  hasIssue(sameMachine, "participants.1.port", /binds 0\.0\.0\.0: every address of 10\.0\.0\.1's machine/);
  const localhost = await issuesOf(
    EXAMPLE.replace(
      "{ name: participant2, port: 4021 }",
      "{ name: participant2, port: 4011, host: localhost }",
    ),
  );
  hasIssue(localhost, "participants.1.port", /the same loopback/);
  // Two nodes given one address: the others could not tell them apart.
  const oneAddress = await issuesOf(
    twoHosts.replace("host: 10.0.0.2 }", "host: 10.0.0.2, address: '10.0.0.1:4011' }"),
  );
  hasIssue(oneAddress, "participants.1.address", /^10\.0\.0\.1:4011 is also the address of participant1$/);
});

test("environment overrides set host and address", async () => {
  const { config } = await load(EXAMPLE, {
    env: {
      LOCKSTEP_SYNCHRONIZER_SEQUENCER_HOST: "0.0.0.0",
      LOCKSTEP_SYNCHRONIZER_SEQUENCER_ADDRESS: "seq.example:4001",
      LOCKSTEP_PARTICIPANTS_1_HOST: "::1",
    },
  }).loading;
  assert.equal(nodeEndpoint(config.synchronizer.sequencer).bindHost, "0.0.0.0");
  assert.equal(nodeEndpoint(config.synchronizer.sequencer).url, "http://seq.example:4001");
  assert.equal(nodeEndpoint(config.participants[1] as EndpointConfig).url, "http://[::1]:4021");

  const error = await issuesOf(EXAMPLE, { env: { LOCKSTEP_PARTICIPANTS_0_HOST: "a b" } });
  hasIssue(
    error,
    "participants.0.host",
    /not an IP address or a host name .*\(from LOCKSTEP_PARTICIPANTS_0_HOST\)/,
  );
});
