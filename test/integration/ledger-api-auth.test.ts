import assert from "node:assert/strict";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { type CryptoKey, exportJWK, generateKeyPair, SignJWT } from "jose";
import { parse, stringify } from "yaml";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { createNodeClient, nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { AdminService } from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import { UserManagementService } from "../../src/gen/lockstep/ledger/v1/user_management_service_pb.ts";
import { adminClient } from "../../src/node/clients.ts";
import { runLockstep } from "../support/cli.ts";
import {
  connectJsonErrorCode,
  iouArgs,
  type LedgerClients,
  postConnectJson,
} from "../support/ledger-client.ts";
import {
  createIouCommand,
  type LedgerNetwork,
  startLedgerNetwork,
  waitFor,
} from "../support/ledger-network.ts";

// Ledger API authorization and the Admin API token on a real network (`lockstep up --detach`):
// participant1 verifies HS256 tokens with an audience, participant2 ES256 tokens against a JWKS
// file with an issuer (scope-based). Every refusal is seen with its code, through the Ledger API
// clients and through the CLI.
const AUDIENCE = "https://lockstep.test/participant1";
const ISSUER = "https://issuer.lockstep.test";
const SECRET = "0123456789abcdef0123456789abcdef-test-secret";

let network: LedgerNetwork;
let p1: LedgerClients;
let p2: LedgerClients;
let es256: CryptoKey;
let alice: string;
let bob: string;

const secret = new TextEncoder().encode(SECRET);

/** An HS256 token for participant1; `exp` in seconds from now (negative: already expired). */
function hsToken(
  sub: string,
  options: { exp?: number; aud?: string; key?: Uint8Array } = {},
): Promise<string> {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setAudience(options.aud ?? AUDIENCE)
    .setExpirationTime(Math.floor(Date.now() / 1000) + (options.exp ?? 600));
  return jwt.sign(options.key ?? secret);
}

/** An ES256 token for participant2 (scope-based, as Canton's). */
function esToken(
  sub: string,
  options: { scope?: string; iss?: string; key?: CryptoKey } = {},
): Promise<string> {
  return new SignJWT({ scope: options.scope ?? "daml_ledger_api" })
    .setProtectedHeader({ alg: "ES256", kid: "test-key" })
    .setSubject(sub)
    .setIssuer(options.iss ?? ISSUER)
    .setExpirationTime("10m")
    .sign(options.key ?? es256);
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** The code a call was refused with (the Lockstep code and its gRPC status). */
async function refusal(call: Promise<unknown>): Promise<{ code: string; grpc: Code }> {
  try {
    await call;
  } catch (error) {
    const lockstep = fromConnectError(error);
    assert.ok(lockstep, `expected a Lockstep error, got ${String(error)}`);
    assert.ok(error instanceof ConnectError);
    return { code: lockstep.code, grpc: error.code };
  }
  assert.fail("the call was not refused");
}

before(async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  es256 = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "ES256", use: "sig" };
  network = await startLedgerNetwork({
    participants: 2,
    configure: (config: ConfigInput, dir: string) => {
      writeFileSync(join(dir, "ledger-secret"), `${SECRET}\n`, { mode: 0o600 });
      writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [jwk] }));
      const [one, two] = config.participants ?? [];
      assert.ok(one && two);
      one["ledger-api"] = { auth: { type: "hs256", "secret-file": "ledger-secret", audience: AUDIENCE } };
      two["ledger-api"] = { auth: { type: "jwks", "jwks-file": "jwks.json", issuer: ISSUER } };
    },
  });
  [p1, p2] = network.clients as [LedgerClients, LedgerClients];
});

after(() => network?.down());

test("a call without a valid token is UNAUTHENTICATED; an expired one ACCESS_TOKEN_EXPIRED", async () => {
  assert.deepEqual(await refusal(p1.state.getLedgerEnd({})), {
    code: "UNAUTHENTICATED",
    grpc: Code.Unauthenticated,
  });
  const other = new TextEncoder().encode("another secret that is long enough!!");
  assert.equal(
    (await refusal(p1.state.getLedgerEnd({}, bearer(await hsToken("participant_admin", { key: other })))))
      .code,
    "UNAUTHENTICATED",
  );
  assert.equal(
    (
      await refusal(
        p1.state.getLedgerEnd({}, bearer(await hsToken("participant_admin", { aud: "https://elsewhere" }))),
      )
    ).code,
    "UNAUTHENTICATED",
  );
  assert.equal(
    (await refusal(p1.state.getLedgerEnd({}, { headers: { authorization: "Basic abc" } }))).code,
    "UNAUTHENTICATED",
  );
  assert.deepEqual(
    await refusal(p1.state.getLedgerEnd({}, bearer(await hsToken("participant_admin", { exp: -60 })))),
    {
      code: "ACCESS_TOKEN_EXPIRED",
      grpc: Code.Unauthenticated,
    },
  );
  // Authenticated, but no such user: it may do nothing (Canton's answer).
  assert.deepEqual(await refusal(p1.state.getLedgerEnd({}, bearer(await hsToken("nobody")))), {
    code: "PERMISSION_DENIED",
    grpc: Code.PermissionDenied,
  });
  // The JSON face answers the same, with HTTP 401.
  const json = await postConnectJson(
    network.participantPorts[0] as number,
    "lockstep.ledger.v1.StateService/GetLedgerEnd",
  );
  assert.equal(json.status, 401);
  assert.equal(connectJsonErrorCode(json.body), "UNAUTHENTICATED");

  const end = await p1.state.getLedgerEnd({}, bearer(await hsToken("participant_admin")));
  assert.equal(end.offset, 0n);
});

test("the CLI manages users and rights with an admin token; a user acts within its rights only", async () => {
  const cfg = network.cfg;
  const admin = await hsToken("participant_admin");
  const asAdmin = ["--token", admin];
  const ok = async (args: string[], token = asAdmin) => {
    const r = await runLockstep([
      "ledger",
      ...args,
      "--participant",
      "participant1",
      "--json",
      ...token,
      ...cfg,
    ]);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
    return r.json();
  };
  const refused = async (args: string[], token: string[], code: string) => {
    const r = await runLockstep([
      "ledger",
      ...args,
      "--participant",
      "participant1",
      "--json",
      ...token,
      ...cfg,
    ]);
    assert.notEqual(r.code, 0, `${args.join(" ")} was not refused`);
    assert.match(`${r.stdout}${r.stderr}`, new RegExp(code), args.join(" "));
  };

  alice = (await ok(["allocate-party", "alice"])).party as string;
  bob = (await ok(["allocate-party", "bob"])).party as string;
  await ok(["user", "create", "alice-app", "--act-as", alice, "--primary-party", alice]);
  await refused(["user", "create", "alice-app", "--act-as", alice], asAdmin, "USER_ALREADY_EXISTS");
  await refused(["user", "get", "nobody"], asAdmin, "USER_NOT_FOUND");
  const users = (await ok(["user", "list"])).users as { id: string }[];
  assert.deepEqual(users.map((u) => u.id).sort(), ["alice-app", "participant_admin"]);
  assert.deepEqual((await ok(["user", "rights", "alice-app"])).rights, [`CanActAs(${alice})`]);

  // `ledger token` issues from the participant's secret file; the token's user is alice-app.
  const aliceToken = (await ok(["token", "--user", "alice-app", "--expires-in", "10m"])).token as string;
  const asAlice = ["--token", aliceToken];
  const iou = JSON.stringify(iouArgs(alice, bob));
  const created = await ok(
    ["submit", "--act-as", alice, "--command-id", "cli-1", "--create", "Iou", "--args", iou],
    asAlice,
  );
  assert.equal((created.createdContractIds as string[]).length, 1);
  const acs = await ok(["acs", "--party", alice], asAlice);
  assert.equal((acs.contracts as unknown[]).length, 1);
  // Own user and rights without admin; everything else refused.
  assert.deepEqual((await ok(["user", "rights"], asAlice)).rights, [`CanActAs(${alice})`]);
  assert.equal((await ok(["user", "get"], asAlice)).id, "alice-app");
  await refused(
    ["submit", "--act-as", bob, "--command-id", "cli-2", "--create", "Iou", "--args", iou],
    asAlice,
    "PERMISSION_DENIED",
  );
  await refused(["acs", "--party", bob], asAlice, "PERMISSION_DENIED");
  await refused(["allocate-party", "carol"], asAlice, "PERMISSION_DENIED");
  await refused(["user", "create", "mallory", "--admin"], asAlice, "PERMISSION_DENIED");
  await refused(["user", "get", "participant_admin"], asAlice, "PERMISSION_DENIED");
  await refused(["end"], [], "UNAUTHENTICATED");

  // The token may also come from the environment.
  const env = await runLockstep(["ledger", "end", "--participant", "participant1", "--json", ...cfg], {
    env: { LOCKSTEP_LEDGER_TOKEN: aliceToken },
  });
  assert.equal(env.code, 0, env.stderr);
});

test("reading and acting outside one's rights through the Ledger API; grant and revoke take effect", async () => {
  const aliceToken = bearer(await hsToken("alice-app"));
  const admin = bearer(await hsToken("participant_admin"));
  const users = createNodeClient(UserManagementService, nodeBaseUrl(network.participantPorts[0] as number));

  const denied = { code: "PERMISSION_DENIED", grpc: Code.PermissionDenied };
  assert.deepEqual(
    await refusal(
      p1.commands.submitAndWait(
        { commands: createIouCommand("api-1", bob, alice, { userId: "alice-app" }) },
        aliceToken,
      ),
    ),
    denied,
  );
  // Another user's id in the command is refused too; an empty one is the token's.
  assert.deepEqual(
    await refusal(
      p1.commands.submitAndWait(
        { commands: createIouCommand("api-2", alice, bob, { userId: "someone-else" }) },
        aliceToken,
      ),
    ),
    denied,
  );
  const own = await p1.commands.submitAndWait(
    { commands: createIouCommand("api-3", alice, bob, { userId: "" }) },
    aliceToken,
  );
  assert.equal(own.completion?.userId, "alice-app");

  assert.deepEqual(await refusal(p1.state.getActiveContracts({ parties: [bob] }, aliceToken)), denied);
  const updates = p1.updates.getUpdates({ beginExclusive: 0n, parties: [bob] }, aliceToken);
  assert.deepEqual(
    await refusal(
      (async () => {
        for await (const _ of updates) break;
      })(),
    ),
    denied,
  );
  const completions = p1.completions.completionStream(
    { beginExclusive: 0n, userId: "someone-else", parties: [alice] },
    aliceToken,
  );
  assert.deepEqual(
    await refusal(
      (async () => {
        for await (const _ of completions) break;
      })(),
    ),
    denied,
  );
  assert.deepEqual(await refusal(users.listUsers({}, aliceToken)), denied);

  const readBob = [{ kind: { case: "canReadAs" as const, value: { party: bob } } }];
  assert.equal(
    (await users.grantUserRights({ userId: "alice-app", rights: readBob }, admin)).newlyGrantedRights.length,
    1,
  );
  assert.equal(
    (await users.grantUserRights({ userId: "alice-app", rights: readBob }, admin)).newlyGrantedRights.length,
    0,
  );
  const bobs = await p1.state.getActiveContracts({ parties: [bob] }, aliceToken);
  assert.ok(bobs.contracts.length >= 1, "bob is an observer of alice's Ious");
  assert.equal(
    (await users.revokeUserRights({ userId: "alice-app", rights: readBob }, admin)).newlyRevokedRights.length,
    1,
  );
  assert.deepEqual(await refusal(p1.state.getActiveContracts({ parties: [bob] }, aliceToken)), denied);
  assert.equal(
    (await refusal(users.grantUserRights({ userId: "ghost", rights: readBob }, admin))).code,
    "USER_NOT_FOUND",
  );
  assert.equal(
    (await refusal(users.createUser({ user: { id: "bad user!" } }, admin))).code,
    "INVALID_ARGUMENT",
  );
});

test("an open update stream is closed with ACCESS_TOKEN_EXPIRED when its token expires", async () => {
  const expiresAt = Math.floor(Date.now() / 1000) + 3;
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("alice-app")
    .setAudience(AUDIENCE)
    .setExpirationTime(expiresAt)
    .sign(secret);
  const seen: bigint[] = [];
  const stream = p1.updates.getUpdates(
    { beginExclusive: 0n, parties: [alice] },
    { ...bearer(token), timeoutMs: 60_000 },
  );
  const ended = await refusal(
    (async () => {
      for await (const r of stream) if (r.update.case === "transaction") seen.push(r.update.value.offset);
    })(),
  );
  assert.deepEqual(ended, { code: "ACCESS_TOKEN_EXPIRED", grpc: Code.Unauthenticated });
  assert.ok(seen.length >= 1, "the stream delivered alice's updates before it expired");
  assert.ok(Date.now() >= expiresAt * 1000 - 50, "closed at the expiry, not before");
});

test("participant2 verifies ES256 tokens against its JWKS file", async () => {
  const admin = bearer(await esToken("participant_admin"));
  const { party } = await p2.parties.allocateParty({ partyIdHint: "dave" }, admin);
  assert.match(party, /^dave::/);
  await waitFor("dave known", async () =>
    (await p2.parties.listParties({}, admin)).parties.some((p) => p.party === party) ? true : undefined,
  );
  const { privateKey: stranger } = await generateKeyPair("ES256");
  for (const bad of [
    await esToken("participant_admin", { key: stranger }),
    await esToken("participant_admin", { scope: "something_else" }),
    await esToken("participant_admin", { iss: "https://other-issuer" }),
    await hsToken("participant_admin"),
  ]) {
    assert.equal((await refusal(p2.state.getLedgerEnd({}, bearer(bad)))).code, "UNAUTHENTICATED");
  }
});

test("the Admin API needs the admin token; health stays open", async () => {
  const { ports, dir } = network.net;
  const tokenFile = join(dir, "data", "admin-token");
  assert.equal(statSync(tokenFile).mode & 0o777, 0o600, "the token file is owner-only");
  for (const port of [ports.sequencer, ports.mediator, ...ports.participants]) {
    const missing = await postConnectJson(port, "lockstep.admin.v1.AdminService/GetStatus");
    assert.equal(missing.status, 401);
    assert.equal(connectJsonErrorCode(missing.body), "ADMIN_UNAUTHENTICATED");
    const wrong = createNodeClient(AdminService, nodeBaseUrl(port));
    assert.deepEqual(await refusal(wrong.getStatus({}, bearer("not-the-admin-token-at-all"))), {
      code: "ADMIN_UNAUTHENTICATED",
      grpc: Code.Unauthenticated,
    });
    // This process registered the network's token (test/support/cli.ts), as the CLI does.
    assert.ok((await adminClient(port).getStatus({})).name);
    const health = await fetch(`${nodeBaseUrl(port)}/health`);
    assert.equal(health.status, 200);
  }
  const status = await postConnectJson(
    ports.sequencer,
    "lockstep.sequencer.v1.SequencerService/GetSequencerStatus",
  );
  assert.equal(connectJsonErrorCode(status.body), "ADMIN_UNAUTHENTICATED");

  // The CLI reads the token from the data dir, or from LOCKSTEP_ADMIN_TOKEN.
  const ok = await runLockstep(["sequencer", "status", "--json", ...network.cfg]);
  assert.equal(ok.code, 0, ok.stderr);
  const token = readFileSync(tokenFile, "utf8").trim();
  const viaEnv = await runLockstep(["sequencer", "status", "--json", ...network.cfg], {
    env: { LOCKSTEP_ADMIN_TOKEN: token },
  });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  const wrongEnv = await runLockstep(["sequencer", "status", "--json", ...network.cfg], {
    env: { LOCKSTEP_ADMIN_TOKEN: "wrong-wrong-wrong-wrong" },
  });
  assert.notEqual(wrongEnv.code, 0);
  assert.match(`${wrongEnv.stdout}${wrongEnv.stderr}`, /ADMIN_UNAUTHENTICATED/);

  // A sequencer that refuses the token is not "down": backup create fails with the code instead of
  // taking a set without retention holds (and restore plan instead of skipping its sequencer checks).
  const listed = async () => (await runLockstep(["backup", "list", "--json", ...network.cfg])).stdout;
  const before = await listed();
  const backup = await runLockstep(["backup", "create", "--json", ...network.cfg], {
    env: { LOCKSTEP_ADMIN_TOKEN: "wrong-wrong-wrong-wrong" },
  });
  assert.notEqual(backup.code, 0, backup.stdout);
  assert.match(`${backup.stdout}${backup.stderr}`, /ADMIN_UNAUTHENTICATED/);
  assert.equal(await listed(), before, "no set was listed");
});

test("a participant whose config says nothing about auth refuses to start, naming the choices", async () => {
  const stop = await runLockstep(["node", "stop", "participant2", ...network.cfg]);
  assert.equal(stop.code, 0, stop.stderr);
  const config = parse(readFileSync(network.net.configPath, "utf8")) as ConfigInput;
  const two = config.participants?.[1];
  assert.ok(two);
  delete two["ledger-api"];
  const bare = join(network.net.dir, "no-auth.yaml");
  writeFileSync(bare, stringify(config));
  const start = await runLockstep(["node", "start", "participant2", "--detach", "--json", "--config", bare]);
  assert.equal(start.code, 2, `${start.stdout}${start.stderr}`);
  const output = `${start.stdout}${start.stderr}`;
  assert.match(output, /CONFIG_INVALID/);
  assert.match(output, /type: off/);
  assert.match(output, /hs256/);
});
