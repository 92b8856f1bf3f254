import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { type CryptoKey, exportJWK, exportSPKI, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { UserManagementService } from "../../src/gen/lockstep/ledger/v1/user_management_service_pb.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import {
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";
import { withinSeconds } from "../support/wait.ts";

// A hostile client against a real participant (`lockstep up --detach`) whose Ledger API verifies
// RS256 tokens against a JWKS file, scope-based (Canton's default: `scope` holds daml_ledger_api).
// Each attack is refused with its code, and nothing it tried to change changed.
const KID = "rsa-1";

let network: LedgerNetwork;
let p1: LedgerClients;
let users: ReturnType<typeof createNodeClient<typeof UserManagementService>>;
let rsa: CryptoKey;
let rsaPublicPem: string;
let alice: string;
let bob: string;

type Claims = JWTPayload & { scope?: string };

/** An RS256 token; `claims` override the defaults (a `undefined` value drops the claim). */
async function token(sub: string, claims: Claims = {}, header: { kid?: string } = {}, key = rsa) {
  const now = Math.floor(Date.now() / 1000);
  const payload: Claims = { sub, scope: "daml_ledger_api", iat: now, exp: now + 600, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  return new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: KID, ...header }).sign(key);
}
const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });
const as = async (sub: string, claims?: Claims) => bearer(await token(sub, claims));
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
const canActAs = (party: string) => ({ kind: { case: "canActAs" as const, value: { party } } });
const canReadAs = (party: string) => ({ kind: { case: "canReadAs" as const, value: { party } } });
const admin = { kind: { case: "participantAdmin" as const, value: {} } };

/** The Lockstep code and gRPC status a call (or a stream's first item) was refused with. */
async function refusal(call: Promise<unknown> | AsyncIterable<unknown>): Promise<[string, Code]> {
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call) break;
    else await call;
  } catch (error) {
    const lockstep = fromConnectError(error);
    assert.ok(lockstep && error instanceof ConnectError, `expected a Lockstep error, got ${String(error)}`);
    return [lockstep.code, error.code];
  }
  assert.fail("the call was not refused");
}
const UNAUTHENTICATED: [string, Code] = ["UNAUTHENTICATED", Code.Unauthenticated];
const DENIED: [string, Code] = ["PERMISSION_DENIED", Code.PermissionDenied];
const INVALID: [string, Code] = ["INVALID_ARGUMENT", Code.InvalidArgument];

const ledgerEnd = async () => (await p1.state.getLedgerEnd({}, await as("participant_admin"))).offset;
const rightsOf = async (userId: string) =>
  (await users.listUserRights({ userId }, await as("participant_admin"))).rights.map((r) =>
    JSON.stringify(r.kind),
  );

before(async () => {
  const pair = await generateKeyPair("RS256", { extractable: true });
  rsa = pair.privateKey;
  rsaPublicPem = await exportSPKI(pair.publicKey);
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: KID, alg: "RS256", use: "sig" };
  network = await startLedgerNetwork({
    participants: 1,
    configure: (config: ConfigInput, dir: string) => {
      writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [jwk] }));
      const [one] = config.participants ?? [];
      assert.ok(one);
      one["ledger-api"] = { auth: { type: "jwks", "jwks-file": "jwks.json" } };
    },
  });
  [p1] = network.clients as [LedgerClients];
  users = createNodeClient(UserManagementService, nodeBaseUrl(network.participantPorts[0] as number));
  const asAdmin = await as("participant_admin");
  alice = (await p1.parties.allocateParty({ partyIdHint: "alice" }, asAdmin)).party;
  bob = (await p1.parties.allocateParty({ partyIdHint: "bob" }, asAdmin)).party;
  await waitFor("alice and bob known", async () => {
    const known = (await p1.parties.listParties({}, asAdmin)).parties.map((p) => p.party);
    return known.includes(alice) && known.includes(bob) ? true : undefined;
  });
  await users.createUser({ user: { id: "alice-app" }, rights: [canActAs(alice)] }, asAdmin);
  await users.createUser({ user: { id: "alice-reader" }, rights: [canReadAs(alice)] }, asAdmin);
  await p1.commands.submitAndWait(
    { commands: createIouCommand("seed-1", alice, bob, { userId: "alice-app" }) },
    await as("alice-app"),
  );
});

after(() => network?.down());

test("forged, unsigned and ill-timed tokens are UNAUTHENTICATED", async () => {
  const now = Math.floor(Date.now() / 1000);
  const valid = await token("participant_admin");
  const [header, payload] = valid.split(".");
  const forged: [string, string][] = [
    // RFC 7519 §6 unsecured JWT: jose never accepts "none".
    ["alg none", `${b64({ alg: "none" })}.${payload}.`],
    ["signature stripped", `${header}.${payload}.`],
    [
      "payload swapped",
      `${header}.${b64({ sub: "participant_admin", scope: "daml_ledger_api" })}.${valid.split(".")[2]}`,
    ],
    // Algorithm confusion: the JWKS's public key used as an HMAC secret; only RS256/ES256 are allowed.
    [
      "HS256 with the public key",
      await new SignJWT({ sub: "participant_admin", scope: "daml_ledger_api" })
        .setProtectedHeader({ alg: "HS256", kid: KID })
        .sign(new TextEncoder().encode(rsaPublicPem)),
    ],
    [
      "another key, same kid",
      await token("participant_admin", {}, {}, (await generateKeyPair("RS256")).privateKey),
    ],
    ["a kid the JWKS lacks", await token("participant_admin", {}, { kid: "rsa-2" })],
    ["nbf in the future", await token("participant_admin", { nbf: now + 3600 })],
    // Canton (java-jwt's IssuedAt check) refuses a token issued in the future; jose alone would not.
    ["iat in the future", await token("participant_admin", { iat: now + 3600 })],
    ["exp not a number", await token("participant_admin", { exp: "99999999999" as unknown as number })],
    ["no scope", await token("participant_admin", { scope: undefined })],
    ["a scope that only starts alike", await token("participant_admin", { scope: "daml_ledger_api_x" })],
    ["no sub", await token("", { sub: undefined })],
    ["empty sub", await token("")],
    ["not a JWT", "a.b.c"],
  ];
  for (const [what, t] of forged) {
    assert.deepEqual(await refusal(p1.state.getLedgerEnd({}, bearer(t))), UNAUTHENTICATED, what);
    assert.deepEqual(
      await refusal(p1.parties.allocateParty({ partyIdHint: "mallory" }, bearer(t))),
      UNAUTHENTICATED,
      what,
    );
  }
  for (const authorization of [
    "Bearer",
    "Bearer ",
    `Bearer ${valid} ${valid}`,
    `Bearer ${valid}, Bearer ${valid}`,
    `Token ${valid}`,
    valid,
  ]) {
    const headers = { headers: { authorization } };
    assert.deepEqual(
      await refusal(p1.state.getLedgerEnd({}, headers)),
      UNAUTHENTICATED,
      authorization.slice(0, 20),
    );
  }
  // An expiry past what a Date holds is still just expired (formatting it threw a RangeError).
  assert.deepEqual(await refusal(p1.state.getLedgerEnd({}, await as("participant_admin", { exp: -1e20 }))), [
    "ACCESS_TOKEN_EXPIRED",
    Code.Unauthenticated,
  ]);
  assert.ok(
    !(await p1.parties.listParties({}, await as("participant_admin"))).parties.some((p) =>
      p.party.startsWith("mallory"),
    ),
  );
  // Accepted, deliberately (docs/security.md): the scheme in any case (RFC 7235 §2.1; Canton wants
  // "Bearer " exactly), and a token without `exp` (optional in Canton too).
  assert.equal(
    typeof (await p1.state.getLedgerEnd({}, { headers: { authorization: `bearer ${valid}` } })).offset,
    "bigint",
  );
  assert.equal(
    typeof (await p1.state.getLedgerEnd({}, await as("participant_admin", { exp: undefined }))).offset,
    "bigint",
  );
});

test("a token whose sub is no user id is INVALID_ARGUMENT; an unknown user PERMISSION_DENIED", async () => {
  // Canton: Ref.UserId.fromString fails → INVALID_ARGUMENT "token …" (UserBasedAuthorizationInterceptor).
  // Before, such a sub went to the database as is (PostgreSQL refuses a NUL byte in text).
  for (const sub of [
    "participant_admin\u0000",
    "a".repeat(20_000),
    "pаrticipant_admin" /* Cyrillic а */,
    "alice app",
  ]) {
    assert.deepEqual(
      await refusal(p1.state.getLedgerEnd({}, await as(sub))),
      INVALID,
      JSON.stringify(sub.slice(0, 20)),
    );
  }
  assert.deepEqual(await refusal(p1.state.getLedgerEnd({}, await as("nobody"))), DENIED);
  assert.deepEqual(await refusal(users.getUser({ userId: "" }, await as("Participant_Admin"))), DENIED);
});

test("a 1 MiB token is refused by the transport at once; a 32 KiB one with a code", async () => {
  const port = network.participantPorts[0] as number;
  const huge = `Bearer ${"a".repeat(1 << 20)}`;
  const started = Date.now();
  // HTTP/2 (gRPC, Connect).
  // The client may send it (its own limit is 64 KiB): the server is the one to refuse.
  const session = http2.connect(nodeBaseUrl(port), { maxSendHeaderBlockLength: 4 << 20 });
  const h2 = await new Promise<string>((resolve) => {
    session.on("error", (e) => resolve(`session ${e.message}`));
    const req = session.request({
      ":method": "POST",
      ":path": "/lockstep.ledger.v1.StateService/GetLedgerEnd",
      "content-type": "application/json",
      authorization: huge,
    });
    req.on("response", (h) => resolve(`status ${h[":status"]}`));
    req.on("error", (e) => resolve(`stream ${e.message}`));
    req.on("close", () => resolve(`closed ${req.rstCode}`));
    req.end("{}");
  }).finally(() => session.destroy());
  // nghttp2 ends the connection (GOAWAY, COMPRESSION_ERROR = 9) past its 64 KiB header limit.
  assert.match(h2, /error code 9|status 431/);
  // HTTP/1.1 (Connect JSON): Node's parser answers 431 past 16 KiB of headers.
  const h1 = await new Promise<string>((resolve) => {
    let answer = "";
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(
        `POST /lockstep.ledger.v1.StateService/GetLedgerEnd HTTP/1.1\r\nhost: x\r\nauthorization: ${huge}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`,
      );
    });
    socket.on("data", (d) => {
      answer += d;
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => resolve(answer.split("\r\n")[0] ?? ""));
  });
  assert.match(h1, /^HTTP\/1\.1 431/);
  assert.ok(Date.now() - started < 5_000, `refused in ${Date.now() - started} ms`);
  // Beneath the transport's limit, a long token reaches the verifier and is refused with a code.
  const long = await token("participant_admin", { pad: "p".repeat(24 * 1024) });
  assert.deepEqual(await refusal(p1.state.getLedgerEnd({}, bearer(`${long}x`))), UNAUTHENTICATED);
  assert.equal(typeof (await ledgerEnd()), "bigint", "the participant keeps serving");
});

test("acting and reading outside one's rights, on every path, changes nothing", async () => {
  const reader = await as("alice-reader");
  const app = await as("alice-app");
  const asAdmin = await as("participant_admin");
  const end = await ledgerEnd();
  const submissions: [string, Parameters<typeof createIouCommand>, typeof app][] = [
    ["read-only user acts", ["x-1", alice, bob, { userId: "alice-reader" }], reader],
    ["another party", ["x-2", bob, alice, { userId: "alice-app" }], app],
    ["another user's id", ["x-3", alice, bob, { userId: "alice-reader" }], app],
    // ParticipantAdmin is no party right (Canton: ClaimAdmin does not satisfy canActAs).
    ["admin acts as alice", ["x-4", alice, bob, { userId: "participant_admin" }], asAdmin],
  ];
  for (const [what, args, auth] of submissions) {
    assert.deepEqual(
      await refusal(p1.commands.submitAndWait({ commands: createIouCommand(...args) }, auth)),
      DENIED,
      what,
    );
    assert.deepEqual(
      await refusal(p1.submission.submit({ commands: createIouCommand(...args) }, auth)),
      DENIED,
      what,
    );
  }
  const both = { ...createIouCommand("x-5", alice, bob, { userId: "" }), actAs: [alice, bob] };
  assert.deepEqual(await refusal(p1.commands.submitAndWait({ commands: both }, app)), DENIED);
  const readingBob = { ...createIouCommand("x-6", alice, bob, { userId: "" }), readAs: [bob] };
  assert.deepEqual(await refusal(p1.commands.submitAndWait({ commands: readingBob }, app)), DENIED);
  assert.equal(await ledgerEnd(), end, "no refused submission reached the ledger");

  assert.equal((await p1.state.getActiveContracts({ parties: [alice] }, reader)).contracts.length, 1);
  // Every party requested must be readable (Canton's requireReadClaimsForAllParties).
  assert.deepEqual(await refusal(p1.state.getActiveContracts({ parties: [alice, bob] }, reader)), DENIED);
  assert.deepEqual(await refusal(p1.state.getActiveContracts({ parties: [bob] }, asAdmin)), DENIED);
  // No parties reads nothing (no wildcard without CanReadAsAnyParty, which Lockstep does not have).
  assert.equal((await p1.state.getActiveContracts({ parties: [] }, reader)).contracts.length, 0);
  assert.deepEqual(
    await refusal(p1.updates.getUpdates({ beginExclusive: 0n, parties: [alice, bob] }, reader)),
    DENIED,
  );
  assert.deepEqual(await refusal(p1.updates.getUpdates({ beginExclusive: 0n, parties: [bob] }, app)), DENIED);
  // Completions are the token's user's only (Canton's CommandCompletionServiceAuthorization).
  assert.deepEqual(
    await refusal(
      p1.completions.completionStream({ beginExclusive: 0n, userId: "alice-app", parties: [alice] }, reader),
    ),
    DENIED,
  );
  assert.deepEqual(
    await refusal(p1.completions.completionStream({ beginExclusive: 0n, userId: "", parties: [bob] }, app)),
    DENIED,
  );
});

test("a non-admin cannot manage users, grant itself rights or allocate parties", async () => {
  const app = await as("alice-app");
  const before = await rightsOf("alice-app");
  const attempts: [string, () => Promise<unknown>][] = [
    ["grant itself admin", () => users.grantUserRights({ userId: "alice-app", rights: [admin] }, app)],
    ["grant itself bob", () => users.grantUserRights({ userId: "", rights: [canActAs(bob)] }, app)],
    [
      "revoke from admin",
      () => users.revokeUserRights({ userId: "participant_admin", rights: [admin] }, app),
    ],
    ["create an admin", () => users.createUser({ user: { id: "mallory" }, rights: [admin] }, app)],
    ["delete another", () => users.deleteUser({ userId: "alice-reader" }, app)],
    ["list users", () => users.listUsers({}, app)],
    ["read another user", () => users.getUser({ userId: "alice-reader" }, app)],
    ["read another's rights", () => users.listUserRights({ userId: "participant_admin" }, app)],
    ["allocate a party", () => p1.parties.allocateParty({ partyIdHint: "mallory" }, app)],
    ["list parties", () => p1.parties.listParties({}, app)],
  ];
  for (const [what, call] of attempts) assert.deepEqual(await refusal(call()), DENIED, what);
  assert.deepEqual(await rightsOf("alice-app"), before);
  assert.ok((await rightsOf("participant_admin")).some((r) => r.includes("participantAdmin")));
  const asAdmin = await as("participant_admin");
  const ids = (await users.listUsers({}, asAdmin)).users.map((u) => u.id);
  assert.deepEqual(ids.sort(), ["alice-app", "alice-reader", "participant_admin"]);
  assert.ok(!(await p1.parties.listParties({}, asAdmin)).parties.some((p) => p.party.startsWith("mallory")));
  // Odd ids and parties, even from the admin: refused before they are stored.
  for (const id of ["", "a".repeat(129), "pаrticipant_admin", "x\u0000", "a/b", "alice app"]) {
    assert.deepEqual(await refusal(users.createUser({ user: { id } }, asAdmin)), INVALID, JSON.stringify(id));
  }
  assert.deepEqual(
    await refusal(
      users.grantUserRights({ userId: "alice-app", rights: [canActAs("x' OR '1'='1")] }, asAdmin),
    ),
    INVALID,
  );
  assert.deepEqual(await refusal(users.createUser({ user: { id: "participant_admin" } }, asAdmin)), [
    "USER_ALREADY_EXISTS",
    Code.AlreadyExists,
  ]);
  assert.deepEqual(await rightsOf("alice-app"), before);
});

test("a month-long token keeps its stream; deleting one's own user is refused while it runs", async () => {
  // 40 days: past the 2^31 ms a Node timer holds (it then fired after 1 ms and closed the stream).
  const longLived = await as("alice-app", { exp: Math.floor(Date.now() / 1000) + 40 * 86_400 });
  const seen: string[] = [];
  let ended: unknown;
  const stop = new AbortController();
  const stream = p1.updates.getUpdates(
    { beginExclusive: await ledgerEnd(), parties: [alice] },
    {
      ...longLived,
      signal: stop.signal,
    },
  );
  const consumed = (async () => {
    try {
      for await (const u of stream) if (u.update.case === "transaction") seen.push(u.update.value.updateId);
    } catch (error) {
      if (!stop.signal.aborted) ended = fromConnectError(error)?.code ?? error;
    }
  })();
  assert.deepEqual(await refusal(users.deleteUser({ userId: "alice-app" }, longLived)), DENIED);
  assert.equal((await users.getUser({ userId: "" }, longLived)).user?.id, "alice-app");
  const created = await p1.commands.submitAndWait(
    { commands: createIouCommand("month-1", alice, bob, { userId: "" }) },
    longLived,
  );
  await waitFor(`the stream delivers the new Iou (ended: ${String(ended)})`, () =>
    seen.includes(created.updateId) ? true : undefined,
  );
  assert.equal(ended, undefined);
  stop.abort();
  await withinSeconds(consumed, 10, "the stream to close");
});

test("a submission id reused by another user does not hand it the first user's completion", async () => {
  await users.createUser({ user: { id: "bob-app" }, rights: [canActAs(bob)] }, await as("participant_admin"));
  const shared = (commandId: string, issuer: string) => ({
    commands: {
      ...createIouCommand(commandId, issuer, bob, { userId: "" }),
      submissionId: "shared-submission",
    },
  });
  const first = await p1.commands.submitAndWait(shared("shared-a", alice), await as("alice-app"));
  const second = await p1.commands.submitAndWait(shared("shared-b", bob), await as("bob-app"));
  // Before, SubmitAndWait answered with the latest completion of that submission id: alice-app's
  // (its update, offset, command id and act-as) to bob-app, who may not read alice.
  assert.equal(second.completion?.userId, "bob-app");
  assert.equal(second.completion?.commandId, "shared-b");
  assert.notEqual(second.updateId, first.updateId);
});
