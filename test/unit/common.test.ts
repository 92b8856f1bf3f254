import assert from "node:assert/strict";
import { test } from "node:test";
import { DurationFormatError, formatDuration, parseDuration } from "../../src/common/duration.ts";
import { ERROR_DEFINITIONS, type ErrorCodeName } from "../../src/common/error-codes.ts";
import { isLockstepError, LockstepError, toLockstepError } from "../../src/common/errors.ts";
import { fromHex, hashFields, sha256Hex, toHex } from "../../src/common/hash.ts";
import { NAME_PATTERN, parseUniqueIdentifier, uniqueIdentifier } from "../../src/common/ids.ts";

test("parseDuration reads every unit", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("2h"), 7_200_000);
  assert.equal(parseDuration("7d"), 604_800_000);
  assert.equal(parseDuration("0s"), 0);
  assert.equal(parseDuration("1.5s"), 1_500);
  assert.equal(parseDuration(" 10s "), 10_000);
});

test("parseDuration refuses what is not a duration", () => {
  for (const bad of [
    "",
    "abc",
    "10",
    "s",
    "-5s",
    "5 s",
    "5S",
    "5sec",
    "1w",
    "1e3s",
    "5s5m",
    "99999999999999999d",
  ]) {
    assert.throws(() => parseDuration(bad), DurationFormatError, `"${bad}"`);
  }
  assert.throws(() => parseDuration("abc"), /"abc" is not a duration; write it like 500ms/);
});

test("formatDuration picks the largest exact unit, so parse∘format is canonical", () => {
  assert.equal(formatDuration(0), "0ms");
  assert.equal(formatDuration(500), "500ms");
  assert.equal(formatDuration(1_500), "1500ms");
  assert.equal(formatDuration(60_000), "1m");
  assert.equal(formatDuration(90_000), "90s");
  assert.equal(formatDuration(7_200_000), "2h");
  assert.equal(formatDuration(604_800_000), "7d");
  for (const text of ["500ms", "30s", "5m", "2h", "7d", "90s"])
    assert.equal(formatDuration(parseDuration(text)), text);
  assert.equal(formatDuration(parseDuration("60s")), "1m");
  assert.equal(formatDuration(parseDuration("24h")), "1d");
});

test("LockstepError fills message and remedy from metadata", () => {
  const e = new LockstepError("NODE_NOT_RUNNING", {
    node: "participant1",
    address: "127.0.0.1:4011",
    unused: undefined,
  });
  assert.equal(e.message, "Node participant1 is not running or does not answer at 127.0.0.1:4011");
  assert.equal(e.remedy, "Start it with `lockstep node start participant1` or `lockstep up`.");
  assert.deepEqual(e.metadata, { node: "participant1", address: "127.0.0.1:4011" });
  assert.equal(e.retryable, true);
  assert.ok(e instanceof Error);
  // Missing keys stay visible as placeholders rather than silently vanishing.
  // @ts-expect-error a missing template key is a compile error; at run time it stays visible
  assert.equal(new LockstepError("CONTRACT_NOT_ACTIVE").message, "Contract {contractId} is not active");
  // Non-string metadata is stringified.
  assert.equal(new LockstepError("PORT_IN_USE", { port: 4011, node: "p1" }).metadata.port, "4011");
});

test("LockstepError cuts a huge metadata value short, so a hostile input is not echoed whole", () => {
  const huge = "x".repeat(1024 * 1024);
  const e = new LockstepError("NODE_NOT_RUNNING", { node: huge, address: "127.0.0.1:4011" });
  assert.ok(e.message.length < 4096, `${e.message.length}`);
  assert.ok(e.remedy.length < 4096, `${e.remedy.length}`);
  assert.match(e.message, /^Node x{2048}… \(1048576 characters in all\) is not running/);
  assert.equal(e.metadata.address, "127.0.0.1:4011");
});

test("exit codes follow the category: usage → 2, safety → 3, anything else → 1", () => {
  assert.equal(new LockstepError("CONFIG_INVALID", { details: "x" }).exitCode, 2);
  assert.equal(new LockstepError<ErrorCodeName>("NODE_UNKNOWN").exitCode, 2);
  assert.equal(new LockstepError<ErrorCodeName>("SEQUENCER_FORK_DETECTED").exitCode, 3);
  assert.equal(new LockstepError<ErrorCodeName>("DUPLICATE_COMMAND").exitCode, 1);
  assert.equal(new LockstepError<ErrorCodeName>("NODE_PASSIVE").exitCode, 1);
  assert.equal(new LockstepError<ErrorCodeName>("INTERNAL_ERROR").exitCode, 1);
  for (const d of ERROR_DEFINITIONS) {
    const expected = d.category === "usage" ? 2 : d.category === "safety" ? 3 : 1;
    assert.equal(new LockstepError(d.code).exitCode, expected, d.code);
  }
});

test("LockstepError.toJSON is the CLI's error shape", () => {
  const e = new LockstepError("DUPLICATE_COMMAND", { completionOffset: "12" });
  assert.deepEqual(JSON.parse(JSON.stringify(e)), {
    code: "DUPLICATE_COMMAND",
    message: "A command with the same change id was already accepted at offset 12",
    retryable: false,
    remedy: "Do not resubmit: the command already took effect. Use a new command id for a new command.",
    metadata: { completionOffset: "12" },
  });
});

test("toLockstepError wraps anything and keeps LockstepErrors as they are", () => {
  const original = new LockstepError("NODE_PASSIVE", { node: "p1" });
  assert.equal(toLockstepError(original), original);
  const cause = new Error("boom");
  const wrapped = toLockstepError(cause);
  assert.equal(wrapped.code, "INTERNAL_ERROR");
  assert.equal(wrapped.message, "Internal error: boom");
  assert.equal(wrapped.cause, cause);
  assert.equal(toLockstepError("text").message, "Internal error: text");
  assert.ok(isLockstepError(wrapped, "INTERNAL_ERROR"));
  assert.ok(!isLockstepError(wrapped, "NODE_PASSIVE"));
  assert.ok(!isLockstepError(cause));
});

test("an unregistered code is refused", () => {
  assert.throws(() => new LockstepError("NOPE" as ErrorCodeName), TypeError);
});

test("hashFields is length-prefixed: shifting bytes between fields changes the hash", () => {
  assert.notDeepEqual(hashFields("ab", "c"), hashFields("a", "bc"));
  assert.notDeepEqual(hashFields("abc"), hashFields("abc", ""));
  assert.deepEqual(hashFields("a", Buffer.from("bc")), hashFields("a", "bc"));
  assert.equal(hashFields().length, 32);
  // Plain sha256 is not length-prefixed, which is exactly why hashFields exists.
  assert.equal(sha256Hex("ab", "c"), sha256Hex("a", "bc"));
  assert.equal(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});

test("hex helpers round-trip", () => {
  const bytes = Uint8Array.from([0, 1, 254, 255]);
  assert.equal(toHex(bytes), "0001feff");
  assert.deepEqual(new Uint8Array(fromHex("0001feff")), bytes);
});

test("unique identifiers are name::namespace", () => {
  assert.equal(uniqueIdentifier("alice", "1220ab"), "alice::1220ab");
  assert.deepEqual(parseUniqueIdentifier("alice::1220ab"), { name: "alice", namespace: "1220ab" });
  // Only the first separator splits; the namespace may contain more.
  assert.deepEqual(parseUniqueIdentifier("a::b::c"), { name: "a", namespace: "b::c" });
  for (const bad of ["alice", "::1220ab", "alice::", "", "alice:1220ab"]) {
    assert.throws(() => parseUniqueIdentifier(bad), TypeError, `"${bad}"`);
  }
});

test("node names fit a database and a file name", () => {
  for (const ok of ["participant1", "p", "seq-1", "a_b"]) assert.match(ok, NAME_PATTERN);
  for (const bad of ["", "1p", "Participant", "p.1", "p 1", "a".repeat(49)])
    assert.doesNotMatch(bad, NAME_PATTERN);
});
