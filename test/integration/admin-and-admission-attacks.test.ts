/**
 * A hostile peer against real nodes (docs/security.md "Admin API", "Permissioned synchronizer"):
 * every admin procedure each node kind serves, called without the token, with a wrong one, in the
 * wrong header form, with another network's: ADMIN_UNAUTHENTICATED and nothing changed; `/health`
 * reveals no secret; a stranger, an impostor, a replay and a revoked member (after a restart too) at
 * the sequencer's member API; odd member ids at `synchronizer admit` through the CLI. (Forged
 * verdicts, mediator names, party ids: member-protocol-attacks.test.ts.)
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { DescService } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import { adminTokenFor, isAdminProcedure } from "../../src/common/admin-credentials.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { nodeBaseUrl } from "../../src/common/rpc-client.ts";
import { nowMicros } from "../../src/common/time.ts";
import { generateKeyPair } from "../../src/crypto/keys.ts";
import { memberKeys, signedTopologyToParts, signTopologyTransaction } from "../../src/crypto/topology.ts";
import { AdminService } from "../../src/gen/lockstep/admin/v1/admin_pb.ts";
import { KeyAdminService } from "../../src/gen/lockstep/admin/v1/keys_pb.ts";
import { SequencerService } from "../../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { runLockstep } from "../support/cli.ts";
import { connectJsonErrorCode } from "../support/ledger-client.ts";
import { allocation, refusal } from "../support/member-attacks.ts";
import { type ParticipantNetwork, startParticipantNetwork } from "../support/participant-network.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { startTestSequencer, TestMember, type TestSequencer } from "../support/sequencer-harness.ts";

const cluster = await startTestPostgres();
let net: ParticipantNetwork;
let seq: TestSequencer;

before(async () => {
  net = await startParticipantNetwork(cluster, ["participant1"]);
  seq = await startTestSequencer(cluster, { onboarding: "allow-list" });
});
after(async () => {
  await seq?.stop();
  await net?.stop();
});

/** One request with exactly these headers (Connect JSON over HTTP/1.1, as curl would send it). */
async function raw(port: number, path: string, headers: Record<string, string>, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // a 404 of an unserved path need not be JSON
  }
  return { status: res.status, body: parsed, text };
}

const call = (port: number, procedure: string, headers: Record<string, string>, body: unknown = {}) =>
  raw(port, `/${procedure}`, headers, body);

const ADMIN_SERVICES: DescService[] = [AdminService, KeyAdminService, SequencerService];
const adminMethods = ADMIN_SERVICES.flatMap((s) =>
  s.methods.filter((m) => isAdminProcedure(s.typeName, m.name)).map((m) => ({ service: s, method: m })),
);

/** The sequencer's calls that are not the operator's: members sign them, or they are open. */
const MEMBER_CALLS = ["Send", "SendBatch", "Subscribe", "Acknowledge", "RegisterMember", "SubmitTopology"];
const OPEN_CALLS = ["GetTopology", "GetMemberEvent"];

/** Everything a refused call could have changed, read with the node's own token. */
async function snapshot(port: number, token: string, sequencer: boolean) {
  const auth = { authorization: `Bearer ${token}` };
  const status = (await call(port, "lockstep.admin.v1.AdminService/GetStatus", auth)).body;
  const keys = (await call(port, "lockstep.admin.v1.KeyAdminService/ListKeys", auth)).body;
  const state = { role: status.role, writerEpoch: status.writerEpoch, keys };
  if (!sequencer) return state;
  const s = (await call(port, "lockstep.sequencer.v1.SequencerService/GetSequencerStatus", auth)).body;
  const admissions = (await call(port, "lockstep.sequencer.v1.SequencerService/ListMemberAdmissions", auth))
    .body;
  return { ...state, pruned: s.pruningLowerBound, holds: s.holds, admissions };
}

test("the sequencer's procedures are all classified: operator (token), member (signed) or open", () => {
  const classified = new Set([...adminMethods.map((m) => m.method.name), ...MEMBER_CALLS, ...OPEN_CALLS]);
  const unclassified = SequencerService.methods.map((m) => m.name).filter((n) => !classified.has(n));
  assert.deepEqual(unclassified, [], "a new sequencer procedure must be put behind the token or say why not");
  for (const name of [...MEMBER_CALLS, ...OPEN_CALLS]) {
    assert.equal(isAdminProcedure(SequencerService.typeName, name), false, name);
  }
  // Self-authenticated by its MAC (writer fencing must reach a copy holding another token).
  assert.equal(isAdminProcedure(AdminService.typeName, "FenceWriter"), false);
});

test("every admin procedure of every node kind refuses a missing, wrong or misplaced token and changes nothing", async () => {
  const nodes = [
    {
      name: "sequencer",
      port: net.sequencer.port,
      serves: [AdminService, KeyAdminService, SequencerService],
    },
    { name: "mediator", port: net.mediator.port, serves: [AdminService, KeyAdminService] },
    { name: "participant1", port: net.runtime("participant1").port, serves: [AdminService, KeyAdminService] },
  ];
  for (const node of nodes) {
    const token = adminTokenFor(nodeBaseUrl(node.port)) as string;
    assert.ok(token && token.length >= 16, `${node.name}'s token`);
    const ok = await call(node.port, "lockstep.admin.v1.AdminService/GetStatus", {
      authorization: `Bearer ${token}`,
    });
    assert.equal(ok.status, 200, `${node.name} answers its own token: ${ok.text}`);
    // RFC 7235 §2.1: the scheme is case-insensitive; the token itself is not.
    const lower = await call(node.port, "lockstep.admin.v1.AdminService/GetStatus", {
      authorization: `bearer ${token}`,
    });
    assert.equal(lower.status, 200);
    const before = await snapshot(node.port, token, node.name === "sequencer");

    const otherNetwork = randomBytes(32).toString("hex");
    const attempts: [string, Record<string, string>][] = [
      ["no token", {}],
      ["a wrong token", { authorization: `Bearer ${otherNetwork}` }],
      ["the token upper-cased", { authorization: `Bearer ${token.toUpperCase()}` }],
      ["a prefix of the token", { authorization: `Bearer ${token.slice(0, -1)}` }],
      ["the token and more", { authorization: `Bearer ${token}x` }],
      ["the token without a scheme", { authorization: token }],
      ["the token as Basic", { authorization: `Basic ${Buffer.from(`admin:${token}`).toString("base64")}` }],
      ["the token, then a second word", { authorization: `Bearer ${token} ${token}` }],
      ["the token in another header", { "x-admin-token": token, "x-api-key": token }],
      ["an empty bearer", { authorization: "Bearer " }],
    ];
    const served = new Set<string>();
    for (const { service, method } of adminMethods) {
      const procedure = `${service.typeName}/${method.name}`;
      assert.equal(method.methodKind, "unary", `${procedure} is unary`);
      for (const [what, headers] of attempts) {
        const refused = await call(node.port, procedure, headers);
        if (refused.status === 404 && !node.serves.some((s) => s.typeName === service.typeName)) continue;
        assert.equal(refused.status, 401, `${node.name} ${procedure} with ${what}: ${refused.text}`);
        assert.equal(connectJsonErrorCode(refused.body), "ADMIN_UNAUTHENTICATED", `${procedure} ${what}`);
        assert.ok(!refused.text.includes(token), "the refusal does not echo the token");
        served.add(service.typeName);
      }
    }
    // What the node answered is its route table: each kind serves what it should, and no more.
    assert.deepEqual([...served].sort(), node.serves.map((s) => s.typeName).sort(), node.name);
    // Connect's GET form of a call goes through the same check.
    const get = await raw(
      node.port,
      "/lockstep.admin.v1.AdminService/GetStatus?connect=v1&encoding=json&message=%7B%7D",
      {},
    );
    assert.notEqual(get.status, 200, get.text);
    // FenceWriter goes without the token, but a forged notice (no MAC of the node's secret) is refused.
    const notice = {
      node: node.name,
      targetActivation: "x",
      writerEpoch: "99",
      mac: randomBytes(32).toString("base64"),
    };
    const fence = await call(node.port, "lockstep.admin.v1.AdminService/FenceWriter", {}, notice);
    assert.equal(connectJsonErrorCode(fence.body), "WRITER_FENCE_REJECTED", fence.text);
    assert.deepEqual(
      await snapshot(node.port, token, node.name === "sequencer"),
      before,
      `${node.name} unchanged`,
    );

    // GET /health stays open (load balancers): who and whether active, no secret, no key path.
    const health = await raw(node.port, "/health", {});
    assert.equal(health.status, 200);
    assert.deepEqual(Object.keys(health.body).sort(), ["kind", "node", "status"]);
    assert.ok(!health.text.includes(token));
  }
});

test("GetMemberEvent: a stranger learns positions and the writer epoch, never the event delivered", async () => {
  const alice = new TestMember("alice");
  await seq.client.admitMember({ member: alice.id });
  const registeredAt = await alice.register(seq.client);
  const procedure = "lockstep.sequencer.v1.SequencerService/GetMemberEvent";
  const request = { member: alice.id, timestamp: String(registeredAt) };
  const stranger = await call(seq.port, procedure, {}, request);
  assert.equal(stranger.status, 200, stranger.text);
  assert.equal(stranger.body.registeredAt, String(registeredAt));
  assert.equal(stranger.body.event, undefined, "alice's event goes to the admin only");
  const wrong = await call(seq.port, procedure, { authorization: `Bearer ${"0".repeat(64)}` }, request);
  assert.equal(wrong.body.event, undefined);
  // The admin (the CLI's restore checks compare its chain hash) gets it.
  const admin = await seq.client.getMemberEvent({ member: alice.id, timestamp: registeredAt });
  assert.equal(admin.event?.timestamp, registeredAt);
});

test("a stranger, an impostor and a replay at the member API", async () => {
  const head = async () => (await seq.client.getTopology({})).transactions.length;
  const topologyBefore = await head();
  const stranger = new TestMember("stranger");
  assert.equal(await refusal(stranger.register(seq.client)), "TOPOLOGY_PARTICIPANT_ONBOARDING_REFUSED");
  assert.equal(
    await refusal(seq.client.send(stranger.sendRequest({ recipients: [stranger.id] }))),
    "SEQUENCER_SENDER_UNKNOWN",
  );

  // Nor through SubmitTopology, which takes only registered members' own keys (no side door).
  const self = signedTopologyToParts(stranger.memberKeysTransaction());
  assert.equal(
    await refusal(seq.client.submitTopology({ transactions: [self] })),
    "INVALID_TOPOLOGY_MAPPING",
  );
  const huge = { ...stranger.subscribeRequest(), member: `${"m".repeat(1 << 20)}::x` };
  const tooLong = seq.client.subscribe(huge)[Symbol.asyncIterator]().next();
  assert.equal(await refusal(tooLong), "SEQUENCER_SENDER_UNKNOWN");

  const bob = new TestMember("bob");
  await seq.client.admitMember({ member: bob.id });
  await bob.register(seq.client);
  const afterBob = await head();
  // An impostor claims bob's id with its own namespace key: only bob's namespace may sign for it.
  const impostor = new TestMember("impostor");
  const claim = signTopologyTransaction(
    { operation: "add", serial: 2, mapping: memberKeys(bob.id, impostor.namespace, [impostor.signing]) },
    impostor.namespace,
  );
  const viaRegister = seq.client.registerMember({ memberKeys: signedTopologyToParts(claim) });
  assert.equal(await refusal(viaRegister), "UNAUTHORIZED_TOPOLOGY_TRANSACTION");
  const viaTopology = seq.client.submitTopology({ transactions: [signedTopologyToParts(claim)] });
  assert.equal(await refusal(viaTopology), "UNAUTHORIZED_TOPOLOGY_TRANSACTION");
  const asBob = bob.sendRequest({ recipients: [bob.id], signWith: impostor.signing });
  assert.equal(await refusal(seq.client.send(asBob)), "SEQUENCER_REQUEST_SIGNATURE_INVALID");
  assert.equal(await head(), afterBob, "no topology change from the impostor");
  assert.equal(afterBob, topologyBefore + 1, "bob's registration only");

  // Replays: a subscription request is signed with its issue time and a nonce; out of the window
  // (5 min either side, as Canton's member authentication tokens expire) it is refused, and any
  // field changed (here where it reads from) breaks the signature.
  const stale = bob.subscribeRequest({ issuedAt: nowMicros() - 6n * 60_000_000n });
  const first = async (r: ReturnType<TestMember["subscribeRequest"]>) =>
    seq.client.subscribe(r)[Symbol.asyncIterator]().next();
  assert.equal(await refusal(first(stale)), "SEQUENCER_REQUEST_SIGNATURE_INVALID");
  const fresh = bob.subscribeRequest();
  assert.equal(await refusal(first({ ...fresh, fromTimestamp: 1n })), "SEQUENCER_REQUEST_SIGNATURE_INVALID");
  const nobody = new TestMember("nobody").id;
  assert.equal(await refusal(first({ ...fresh, member: nobody })), "SEQUENCER_SENDER_UNKNOWN");
});

const writeCliConfig = (dir: string) => {
  const path = join(dir, "lockstep.yaml");
  writeFileSync(
    path,
    stringify({
      "data-dir": join(dir, "data"),
      synchronizer: {
        id: "sync1",
        sequencer: { name: "sequencer", port: seq.port },
        mediator: { name: "mediator", port: 1 },
      },
    }),
  );
  return path;
};

test("synchronizer admit/revoke through the CLI: odd ids and the sequencer refused, twice is a no-op", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-attack-"));
  try {
    const config = writeCliConfig(dir);
    const env = { LOCKSTEP_ADMIN_TOKEN: adminTokenFor(nodeBaseUrl(seq.port)) as string };
    const cli = (...args: string[]) => runLockstep([...args, "--json", "--config", config], { env });
    const list = async () => (await cli("synchronizer", "members")).json<{ members: unknown[] }>().members;
    const before = await list();
    const fp = new TestMember("x").namespace.fingerprint;
    const sequencerId = (await seq.client.getTopology({})).sequencerId;
    // Canton's unique identifier rules (topology/Identifier.scala): the CLI path, then the rest by RPC
    // (a NUL byte cannot even be an argv entry; 1 MiB of id is the shell's limit, not ours).
    for (const id of ["no-delimiter", "name::not-a-fingerprint", sequencerId]) {
      const result = await cli("synchronizer", "admit", id);
      assert.notEqual(result.code, 0, `admit ${id}`);
      assert.match(result.stdout + result.stderr, /INVALID_ARGUMENT/, id);
    }
    const revokeSelf = await cli("synchronizer", "revoke", sequencerId);
    assert.notEqual(revokeSelf.code, 0, "the sequencer cannot revoke itself");
    assert.match(revokeSelf.stdout + revokeSelf.stderr, /INVALID_ARGUMENT/);
    const names = ["", "a::b", "na\u0000me", "na/me", "n\u00e4me", "n".repeat(186), "n".repeat(1 << 20)];
    for (const id of [...names.map((n) => `${n}::${fp}`), `name::${fp.toUpperCase()}`]) {
      for (const verb of ["admitMember", "revokeMember"] as const) {
        const refused = await refusal(seq.client[verb]({ member: id }));
        assert.equal(refused, "INVALID_ARGUMENT", `${verb} ${id.slice(0, 40)}`);
      }
    }
    // Nor can a stranger register under a name no operator could admit.
    const nul = new TestMember("na\u0000me");
    assert.equal(await refusal(nul.register(seq.client)), "INVALID_TOPOLOGY_MAPPING");
    assert.deepEqual(await list(), before, "nothing recorded");

    // Admitting twice changes nothing; revoking an id never seen bans it before it comes.
    const carol = new TestMember("carol");
    const once = (await cli("synchronizer", "admit", carol.id)).json<{
      changed: boolean;
      changedAt: string;
    }>();
    const twice = (await cli("synchronizer", "admit", carol.id)).json<{
      changed: boolean;
      changedAt: string;
    }>();
    assert.deepEqual([once.changed, twice.changed, twice.changedAt], [true, false, once.changedAt]);
    const ghost = new TestMember("ghost");
    const banned = (await cli("synchronizer", "revoke", ghost.id)).json<{
      state: string;
      changed: boolean;
    }>();
    assert.deepEqual([banned.state, banned.changed], ["revoked", true]);
    assert.equal(await refusal(ghost.register(seq.client)), "SEQUENCER_MEMBER_REVOKED");
    // Without the token the CLI is refused by the sequencer, and says so.
    const noToken = await runLockstep(["synchronizer", "admit", ghost.id, "--json", "--config", config], {
      env: { LOCKSTEP_ADMIN_TOKEN: "f".repeat(64) },
    });
    assert.notEqual(noToken.code, 0);
    assert.match(noToken.stdout + noToken.stderr, /ADMIN_UNAUTHENTICATED/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("revoked: the open subscription ends; sends, acks, subscriptions and its topology refused, after a restart too", async () => {
  const dan = new TestMember("dan");
  await seq.client.admitMember({ member: dan.id });
  const registeredAt = await dan.register(seq.client);
  const stream = seq.client.subscribe(dan.subscribeRequest(), { timeoutMs: 60_000 });
  let opened: () => void = () => {};
  const gotFirst = new Promise<void>((resolve) => {
    opened = resolve;
  });
  const ended = (async () => {
    try {
      for await (const _ of stream) opened();
      return "ended without an error";
    } catch (error) {
      return fromConnectError(error)?.code ?? String(error);
    }
  })();
  await gotFirst; // its registration event: the subscription is open
  await seq.client.revokeMember({ member: dan.id });
  assert.equal(await ended, "SEQUENCER_MEMBER_REVOKED");

  const rotation = signTopologyTransaction(
    { operation: "add", serial: 2, mapping: memberKeys(dan.id, dan.namespace, [generateKeyPair("signing")]) },
    dan.namespace,
  );
  const attempts = (s: TestSequencer): Record<string, () => Promise<unknown>> => ({
    send: () => s.client.send(dan.sendRequest({ recipients: [dan.id] })),
    subscribe: () => s.client.subscribe(dan.subscribeRequest())[Symbol.asyncIterator]().next(),
    acknowledge: () => s.client.acknowledge(dan.acknowledgeRequest(registeredAt)),
    party: () => s.client.submitTopology({ transactions: [allocation(dan, "p")] }),
    rotation: () => s.client.submitTopology({ transactions: [signedTopologyToParts(rotation)] }),
    register: () => dan.register(s.client),
  });
  for (const round of ["before", "after"]) {
    if (round === "after") seq = await seq.restart();
    const topology = (await seq.client.getTopology({})).transactions.length;
    for (const [what, attempt] of Object.entries(attempts(seq))) {
      assert.equal(await refusal(attempt()), "SEQUENCER_MEMBER_REVOKED", `${what} ${round} the restart`);
    }
    // SendBatch answers per submission: a signed batch, a time proof among them.
    const batch = dan.signedSubmissions([dan.submission(), dan.submission({ timeProof: true })]);
    const { results } = await seq.client.sendBatch({ signed: batch });
    assert.deepEqual(
      results.map((r) => r.error?.code),
      ["SEQUENCER_MEMBER_REVOKED", "SEQUENCER_MEMBER_REVOKED"],
      `sendBatch ${round} the restart`,
    );
    assert.equal((await seq.client.getTopology({})).transactions.length, topology, "no topology sequenced");
  }
});
