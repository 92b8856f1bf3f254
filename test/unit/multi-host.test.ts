import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "pg-connection-string";
import { isLockstepError } from "../../src/common/errors.ts";
import {
  describeMultiHostUrl,
  effectiveDatabase,
  formatMultiHostUrl,
  isSingleServerUrl,
  multiHostUrlProblem,
  parseMultiHostUrl,
  singleHostUrl,
  withDatabase,
} from "../../src/storage/multi-host.ts";

test("a Patroni cluster's URL: hosts in order, credentials decoded, read-write", () => {
  const url = parseMultiHostUrl(
    "postgresql://lock%40step:p%3Aw%2Fd@db1.example:5432,db2.example:5433/participant1?target_session_attrs=read-write&sslmode=disable",
  );
  assert.deepEqual(url.hosts, [
    { host: "db1.example", port: 5432 },
    { host: "db2.example", port: 5433 },
  ]);
  assert.equal(url.user, "lock@step");
  assert.equal(url.password, "p:w/d");
  assert.equal(url.database, "participant1");
  assert.equal(url.targetSessionAttrs, "read-write");
  assert.deepEqual(url.params, [["sslmode", "disable"]]);
  assert.equal(isSingleServerUrl(url), false);
  assert.equal(describeMultiHostUrl(url), "db1.example:5432,db2.example:5433/participant1 (read-write)");
});

test("a single host is a single server unless it must be read-write", () => {
  const plain = parseMultiHostUrl("postgres://postgres@127.0.0.1:6543/sequencer1");
  assert.deepEqual(plain.hosts, [{ host: "127.0.0.1", port: 6543 }]);
  assert.equal(plain.scheme, "postgres");
  assert.equal(plain.password, undefined);
  assert.equal(plain.targetSessionAttrs, "any");
  assert.equal(isSingleServerUrl(plain), true);
  assert.equal(isSingleServerUrl(parseMultiHostUrl("postgres://h/db?target_session_attrs=primary")), false);
  assert.equal(isSingleServerUrl(parseMultiHostUrl("postgres://h1,h2/db")), false);
});

test("defaults as libpq: port 5432, database = user, no host", () => {
  const url = parseMultiHostUrl("postgresql://alice@h1,h2:6000");
  assert.deepEqual(url.hosts, [
    { host: "h1", port: 5432 },
    { host: "h2", port: 6000 },
  ]);
  assert.equal(url.database, "");
  assert.equal(effectiveDatabase(url), "alice");
  assert.equal(effectiveDatabase(parseMultiHostUrl("postgresql:///")), "postgres");
  assert.deepEqual(parseMultiHostUrl("postgresql:///ledger").hosts, [{ host: "", port: 5432 }]);
});

test("IPv6 hosts in brackets, and host/port parameters override the authority", () => {
  assert.deepEqual(parseMultiHostUrl("postgresql://[::1]:5433,[fe80::2]/db").hosts, [
    { host: "::1", port: 5433 },
    { host: "fe80::2", port: 5432 },
  ]);
  assert.deepEqual(parseMultiHostUrl("postgresql:///db?host=a,b&port=7000").hosts, [
    { host: "a", port: 7000 },
    { host: "b", port: 7000 },
  ]);
  assert.deepEqual(parseMultiHostUrl("postgresql://x:1/db?host=a,b&port=7000,7001").hosts, [
    { host: "a", port: 7000 },
    { host: "b", port: 7001 },
  ]);
  assert.deepEqual(parseMultiHostUrl("postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql").hosts, [
    { host: "/var/run/postgresql", port: 5432 },
  ]);
});

test("each host's URL is one node-postgres reads back to the same server, user and database", () => {
  const url = parseMultiHostUrl(
    "postgresql://u%20x:p%26w@h1:5432,[::1]:5433/my%20db?target_session_attrs=read-write&connect_timeout=2&application_name=a+b",
  );
  const [first, second] = url.hosts;
  assert.ok(first && second);
  const one = parse(singleHostUrl(url, first));
  assert.equal(one.host, "h1");
  assert.equal(one.port, "5432");
  assert.equal(one.user, "u x");
  assert.equal(one.password, "p&w");
  assert.equal(one.database, "my db");
  assert.equal((one as Record<string, unknown>).application_name, "a+b");
  assert.equal((one as Record<string, unknown>).target_session_attrs, undefined);
  assert.equal((one as Record<string, unknown>).connect_timeout, undefined);
  const two = parse(singleHostUrl(url, second));
  assert.equal(two.host, "::1");
  assert.equal(two.port, "5433");
  const socket = parseMultiHostUrl("postgresql://postgres@/db?host=/tmp/pg&port=6000");
  const viaSocket = parse(singleHostUrl(socket, socket.hosts[0] as { host: string; port: number }));
  assert.equal(viaSocket.host, "/tmp/pg");
  assert.equal(viaSocket.port, "6000");
});

test("formatting round-trips, and withDatabase keeps every host and the mode", () => {
  const text = "postgresql://u:pw@h1:5432,h2:5433/db?sslmode=disable&target_session_attrs=read-write";
  assert.deepEqual(parseMultiHostUrl(formatMultiHostUrl(parseMultiHostUrl(text))), parseMultiHostUrl(text));
  const staging = parseMultiHostUrl(withDatabase(text, "db__restoring"));
  assert.equal(staging.database, "db__restoring");
  assert.deepEqual(
    staging.hosts.map((h) => h.port),
    [5432, 5433],
  );
  assert.equal(staging.targetSessionAttrs, "read-write");
  assert.equal(staging.password, "pw");
});

test("what libpq or Lockstep would not accept is named, without the password", () => {
  const cases: [string, RegExp][] = [
    ["mysql://h/db", /expected postgresql:\/\//],
    ["postgresql://h1:99999/db", /invalid port "99999"/],
    ["postgresql://h1:5432,:5433/db", /empty host in a list/],
    ["postgresql://h/db?target_session_attrs=standby", /target_session_attrs=standby is not supported/],
    ["postgresql://h/db?target_session_attrs=read-only", /not supported/],
    ["postgresql:///db?host=a,b,c&port=1,2", /names 2 ports for 3 hosts/],
    ["postgresql://h/db?connect_timeout=soon", /connect_timeout=soon/],
    ["postgresql://u:secret%zz@h/db", /password has an invalid percent-encoding/],
    ["postgresql://h/db?hostaddr=10.0.0.1", /hostaddr is not supported/],
  ];
  for (const [url, expected] of cases) {
    const problem = multiHostUrlProblem(url);
    assert.match(problem ?? "", expected, url);
    assert.doesNotMatch(problem ?? "", /secret/);
  }
  assert.throws(
    () => parseMultiHostUrl("postgresql://h/db?target_session_attrs=standby"),
    (error) => isLockstepError(error, "CONFIG_INVALID"),
  );
  assert.equal(multiHostUrlProblem("postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433/p1"), undefined);
});
