import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { connectJsonErrorCode, iouArgs, postConnectJson } from "../support/ledger-client.ts";
import { type LedgerNetwork, startLedgerNetwork, waitFor } from "../support/ledger-network.ts";

// Hostile input on the Ledger API (issue 15; docs/security.md "Hostile input"): a real participant
// (`lockstep up --detach`, auth off by the test config) gets oversized, malformed, mistyped and
// nonsensical requests as Connect JSON over HTTP/1.1. Each is refused with a code, none crashes the
// node, none writes. The property test prints its seed: FC_SEED=<seed> replays a failure.
let network: LedgerNetwork;
let port: number;
let alice: string;
let iouId: string;

const SERVICE = "lockstep.ledger.v1";
const STREAMS = new Set(["UpdateService/GetUpdates", "CommandCompletionService/CompletionStream"]);

interface RawResponse {
  status: number;
  contentType: string;
  body: Buffer;
}

/**
 * One HTTP/1.1 POST of raw bytes; resolves with whatever comes back. A node refusing a body by its
 * content-length answers at once and closes the connection: the client's writing then fails (EPIPE)
 * after the answer arrived, which is the answer, not an error.
 */
function postRaw(
  procedure: string,
  body: Buffer,
  contentType: string,
  headers: Record<string, string> = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: `/${SERVICE}.${procedure}`,
        headers: { "content-type": contentType, "content-length": body.length, ...headers },
        agent: false,
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        const done = () => {
          // Written no further: the rest of a refused body need not reach the node.
          req.destroy();
          resolve({
            status: res.statusCode ?? 0,
            contentType: String(res.headers["content-type"] ?? ""),
            body: Buffer.concat(chunks),
          });
        };
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", done);
        res.on("close", done);
      },
    );
    let answered = false;
    req.on("error", (error) => {
      if (!answered)
        reject(new Error(`${procedure} (${body.length} bytes): ${error.message}`, { cause: error }));
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${procedure} timed out`)));
    // In slices, stopping once answered: a refusal by size comes before the body is read, and a
    // client still writing when the node closes could lose the answer to the reset.
    void (async () => {
      for (let at = 0; at < body.length && !answered; at += 64 * 1024) {
        await new Promise<void>((done) => req.write(body.subarray(at, at + 64 * 1024), () => done()));
      }
      if (!answered) req.end();
    })();
  });
}

/** A Connect streaming request body: one enveloped message (flags, big-endian length, data). */
function envelope(data: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length, 1);
  return Buffer.concat([head, data]);
}

interface Outcome {
  /** The Connect code of a refusal ("invalid_argument", …); undefined for a success. */
  code?: string;
  /** The Lockstep error code from the ErrorDetail, when the node sent one. */
  lockstep?: string;
  message?: string;
  status: number;
}

/**
 * Sends `body` (JSON text or bytes) to a unary or server-streaming procedure and reads the outcome:
 * unary errors are a JSON body with `code`; a stream's is in its end-of-stream envelope (flag 2).
 */
async function send(procedure: string, body: string | Buffer, binary = false): Promise<Outcome> {
  const data = typeof body === "string" ? Buffer.from(body) : body;
  if (!STREAMS.has(procedure)) {
    const res = await postRaw(procedure, data, binary ? "application/proto" : "application/json");
    if (res.status === 200) return { status: 200 };
    const json = JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
    return {
      status: res.status,
      code: json.code as string | undefined,
      lockstep: connectJsonErrorCode(json),
      message: json.message as string | undefined,
    };
  }
  // A valid stream request would run until the deadline: its end is then deadline_exceeded.
  const res = await postRaw(
    procedure,
    envelope(data),
    binary ? "application/connect+proto" : "application/connect+json",
    { "connect-timeout-ms": "1500" },
  );
  if (res.status !== 200) {
    const json = JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
    return { status: res.status, code: json.code as string | undefined, message: json.message as string };
  }
  let at = 0;
  while (at + 5 <= res.body.length) {
    const flags = res.body.readUInt8(at);
    const length = res.body.readUInt32BE(at + 1);
    const payload = res.body.subarray(at + 5, at + 5 + length);
    at += 5 + length;
    if (flags & 0x02) {
      const end = JSON.parse(payload.toString("utf8")) as { error?: Record<string, unknown> };
      if (!end.error) return { status: 200 };
      return {
        status: 200,
        code: end.error.code as string,
        lockstep: connectJsonErrorCode(end.error),
        message: end.error.message as string,
      };
    }
  }
  return { status: 200 };
}

const json = (procedure: string, value: unknown) => send(procedure, JSON.stringify(value));

async function ledgerEnd(): Promise<string> {
  const r = await postConnectJson(port, `${SERVICE}.StateService/GetLedgerEnd`, {});
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return String(r.body.offset ?? "0");
}

async function activeContracts(): Promise<string[]> {
  const r = await postConnectJson(port, `${SERVICE}.StateService/GetActiveContracts`, { parties: [alice] });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return ((r.body.contracts ?? []) as { contractId: string }[]).map((c) => c.contractId).sort();
}

async function parties(): Promise<string[]> {
  const r = await postConnectJson(port, `${SERVICE}.PartyManagementService/ListParties`, {});
  return ((r.body.parties ?? []) as { party: string }[]).map((p) => p.party).sort();
}

async function healthy(): Promise<void> {
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { status: string }).status, "active");
}

/** What the ledger holds: a refused request must leave all of it as it was. */
async function ledgerState() {
  return { end: await ledgerEnd(), contracts: await activeContracts(), parties: await parties() };
}

const command = (extra: Record<string, unknown> = {}) => ({
  userId: "hostile",
  commandId: `cmd-${Math.random().toString(36).slice(2)}`,
  actAs: [alice],
  ...extra,
});

before(async () => {
  network = await startLedgerNetwork({ participants: 1 });
  port = network.participantPorts[0] as number;
  const allocated = await postConnectJson(port, `${SERVICE}.PartyManagementService/AllocateParty`, {
    partyIdHint: "alice",
  });
  assert.equal(allocated.status, 200, JSON.stringify(allocated.body));
  alice = allocated.body.party as string;
  // Submissions need alice in the topology the participant sees.
  await waitFor("alice hosted", async () => ((await parties()).includes(alice) ? true : undefined));
  const created = await postConnectJson(port, `${SERVICE}.CommandService/SubmitAndWait`, {
    commands: command({ create: { template: "Iou", createArguments: iouArgs(alice, alice) } }),
  });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  iouId = (created.body.createdContractIds as string[])[0] as string;
});

after(() => network?.down());

test("a request over the participant's 4 MiB limit gets RESOURCE_EXHAUSTED and changes nothing", async () => {
  const before = await ledgerState();
  const huge = "x".repeat(4 * 1024 * 1024 + 1);
  const unary = await json("PartyManagementService/AllocateParty", { partyIdHint: huge });
  assert.equal(unary.code, "resource_exhausted", JSON.stringify(unary));
  assert.equal(unary.status, 429, "Connect's HTTP status for resource_exhausted");
  assert.match(unary.message ?? "", /larger than configured readMaxBytes 4194304/);
  const submit = await json("CommandService/SubmitAndWait", {
    commands: command({
      create: { template: "Iou", createArguments: { ...iouArgs(alice, alice), pad: huge } },
    }),
  });
  assert.equal(submit.code, "resource_exhausted", JSON.stringify(submit));
  // A stream's request message is limited too: refused by the length its envelope announces.
  const announced = Buffer.alloc(5 + 16);
  announced.writeUInt32BE(5 * 1024 * 1024, 1);
  const streamed = await postRaw("UpdateService/GetUpdates", announced, "application/connect+json");
  const end = JSON.parse(streamed.body.subarray(5).toString("utf8")) as {
    error: { code: string; message: string };
  };
  assert.equal(end.error.code, "resource_exhausted", JSON.stringify(end));
  assert.match(end.error.message, /message size 5242880 is larger than configured readMaxBytes 4194304/);
  // Just under the limit is read (and refused for what it says, not for its size).
  const under = await json("PartyManagementService/AllocateParty", {
    partyIdHint: "x".repeat(4 * 1024 * 1024 - 64),
  });
  assert.equal(
    under.lockstep,
    "INVALID_ARGUMENT",
    JSON.stringify({ ...under, message: under.message?.slice(0, 200) }),
  );
  // The refusal quotes the hint cut short, not 4 MiB of it (which cost the node seconds of encoding).
  assert.ok((under.message ?? "").length < 8 * 1024, `message of ${under.message?.length} characters`);
  assert.match(under.message ?? "", /characters in all/);
  assert.deepEqual(await ledgerState(), before);
  await healthy();
});

test("malformed JSON, malformed protobuf and wrong types get INVALID_ARGUMENT", async () => {
  const before = await ledgerState();
  for (const text of ["{", '{"commands": ', "[1, 2", "nul", '{"commands": {"userId": "a"}} trailing']) {
    const r = await send("CommandService/SubmitAndWait", text);
    assert.equal(r.code, "invalid_argument", `${text}: ${JSON.stringify(r)}`);
  }
  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);
  assert.equal((await send("CommandService/SubmitAndWait", garbage, true)).code, "invalid_argument");
  assert.equal((await send("UpdateService/GetUpdates", garbage, true)).code, "invalid_argument");
  const wrong: [string, unknown][] = [
    ["CommandService/SubmitAndWait", { commands: command({ actAs: alice }) }],
    ["CommandService/SubmitAndWait", { commands: command({ userId: 7, create: { template: "Iou" } }) }],
    ["CommandService/SubmitAndWait", { commands: command({ create: { template: ["Iou"] } }) }],
    [
      "CommandService/SubmitAndWait",
      { commands: command({ create: { template: "Iou", createArguments: [1] } }) },
    ],
    ["CommandSubmissionService/Submit", { commands: "submit it" }],
    ["PartyManagementService/AllocateParty", { partyIdHint: { name: "bob" } }],
    ["StateService/GetActiveContracts", { parties: [alice], activeAtOffset: "one" }],
    ["UpdateService/GetUpdates", { parties: alice }],
  ];
  for (const [procedure, body] of wrong) {
    const r = await json(procedure, body);
    assert.equal(r.code, "invalid_argument", `${procedure} ${JSON.stringify(body)}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(await ledgerState(), before);
});

test("unknown templates and choices, negative and overflowing offsets: each refused with its code", async () => {
  const before = await ledgerState();
  const unknownTemplate = await json("CommandService/SubmitAndWait", {
    commands: command({ create: { template: "NoSuchTemplate", createArguments: {} } }),
  });
  assert.equal(
    unknownTemplate.lockstep,
    "TEMPLATES_OR_INTERFACES_NOT_FOUND",
    JSON.stringify(unknownTemplate),
  );
  assert.equal(unknownTemplate.code, "not_found");
  const unknownChoice = await json("CommandService/SubmitAndWait", {
    commands: command({ exercise: { contractId: iouId, choice: "Steal", choiceArgument: {} } }),
  });
  assert.equal(unknownChoice.code, "invalid_argument", JSON.stringify(unknownChoice));
  assert.ok(unknownChoice.lockstep, JSON.stringify(unknownChoice));

  const negative = await json("StateService/GetActiveContracts", { parties: [alice], activeAtOffset: "-1" });
  assert.equal(negative.lockstep, "INVALID_ARGUMENT", JSON.stringify(negative));
  const negativeStream = await json("UpdateService/GetUpdates", { parties: [alice], beginExclusive: "-5" });
  assert.equal(negativeStream.lockstep, "INVALID_ARGUMENT", JSON.stringify(negativeStream));
  const negativeCompletions = await json("CommandCompletionService/CompletionStream", {
    userId: "hostile",
    parties: [alice],
    beginExclusive: "-1",
  });
  assert.equal(negativeCompletions.lockstep, "INVALID_ARGUMENT", JSON.stringify(negativeCompletions));
  const negativeDedup = await json("CommandService/SubmitAndWait", {
    commands: command({
      deduplicationOffset: "-3",
      create: { template: "Iou", createArguments: iouArgs(alice, alice) },
    }),
  });
  assert.equal(negativeDedup.lockstep, "INVALID_ARGUMENT", JSON.stringify(negativeDedup));
  // Past int64: the JSON decoder refuses it.
  const overflow = await json("StateService/GetActiveContracts", {
    parties: [alice],
    activeAtOffset: "9223372036854775808",
  });
  assert.equal(overflow.code, "invalid_argument", JSON.stringify(overflow));
  // int64's largest: well-formed, but after the ledger end (Canton's OFFSET_AFTER_LEDGER_END).
  const far = await json("StateService/GetActiveContracts", {
    parties: [alice],
    activeAtOffset: "9223372036854775807",
  });
  assert.equal(far.lockstep, "OFFSET_AFTER_LEDGER_END", JSON.stringify(far));
  assert.deepEqual(await ledgerState(), before);
  await healthy();
});

test("huge identifiers in an otherwise valid command get INVALID_FIELD and write nothing", async () => {
  const before = await ledgerState();
  const long = "c".repeat(100_000);
  const valid = { create: { template: "Iou", createArguments: iouArgs(alice, alice) } };
  for (const [field, extra] of [
    ["commands.command_id", { commandId: long }],
    ["commands.user_id", { userId: long }],
    ["commands.submission_id", { submissionId: long }],
    ["commands.read_as", { readAs: [long] }],
  ] as const) {
    const r = await json("CommandService/SubmitAndWait", { commands: command({ ...valid, ...extra }) });
    assert.equal(r.lockstep, "INVALID_FIELD", `${field}: ${JSON.stringify(r).slice(0, 300)}`);
    assert.equal(r.code, "invalid_argument");
    assert.match(r.message ?? "", new RegExp(`Invalid field ${field}: 100000 characters, at most 255`));
  }
  // 255 is still fine: Canton's limit, not a stricter one.
  const edge = await json("CommandService/SubmitAndWait", {
    commands: command({ ...valid, commandId: "e".repeat(255) }),
  });
  assert.equal(edge.status, 200, JSON.stringify(edge));
  const hint = await json("PartyManagementService/AllocateParty", {
    partyIdHint: "carol",
    displayName: long,
  });
  assert.equal(hint.lockstep, "INVALID_FIELD", JSON.stringify(hint).slice(0, 300));
  const after = await ledgerState();
  // Only the 255-character command wrote: one transaction, one contract.
  assert.deepEqual(after.parties, before.parties);
  assert.equal(after.contracts.length, before.contracts.length + 1);
  assert.equal(BigInt(after.end), BigInt(before.end) + 1n);
});

// ---- property test: generated bad input -------------------------------------------------------

const seed = Number(process.env.FC_SEED ?? Date.now() % 2 ** 31);

interface Attack {
  procedure: string;
  body: string | Buffer;
  binary?: boolean;
  what: string;
}

const READS = [
  "StateService/GetLedgerEnd",
  "StateService/GetActiveContracts",
  "UpdateService/GetUpdates",
  "CommandCompletionService/CompletionStream",
  "PartyManagementService/ListParties",
];
const WRITES = [
  "CommandService/SubmitAndWait",
  "CommandSubmissionService/Submit",
  "PartyManagementService/AllocateParty",
];
const ALL = [...READS, ...WRITES];

const scalar = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
);
/** JSON values that are not a string: wrong for every string field. */
const notString = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.array(scalar, { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 6 }), scalar, { maxKeys: 3 }),
);
/** Wrong for an int64 field: negative, past int64, fractions, not numbers. */
const badOffset = fc.oneof(
  fc.bigInt({ min: -(2n ** 70n), max: -1n }).map(String),
  fc.bigInt({ min: 2n ** 63n, max: 2n ** 80n }).map(String),
  fc.double({ noInteger: true, noDefaultInfinity: true, noNaN: true }),
  fc.constantFrom("abc", "", "1e3x", "NaN", "Infinity", "0x10"),
  fc.boolean(),
  fc.array(fc.integer(), { maxLength: 2 }),
);
const hugeString = fc.integer({ min: 10_000, max: 1_000_000 }).map((n) => "ü".repeat(n / 2));
const notTemplate = fc.string({ minLength: 1, maxLength: 60 }).filter((t) => t !== "Iou");
/** Struct values nested `depth` deep, as lists or records. */
const deep = fc
  .tuple(fc.integer({ min: 100, max: 20_000 }), fc.boolean())
  .map(([depth, lists]) =>
    lists ? `${"[".repeat(depth)}1${"]".repeat(depth)}` : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`,
  );

const attacks: fc.Arbitrary<Attack> = fc.oneof(
  // Any JSON to a read; to a write only JSON that is not an object (never a valid request).
  fc
    .tuple(fc.constantFrom(...READS), fc.jsonValue({ maxDepth: 3 }))
    .map(([procedure, v]) => ({ procedure, body: JSON.stringify(v), what: "random JSON" })),
  fc
    .tuple(
      fc.constantFrom(...WRITES),
      fc.oneof(
        fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
        fc.integer(),
        fc.string(),
        fc.constant(null),
      ),
    )
    .map(([procedure, v]) => ({ procedure, body: JSON.stringify(v), what: "not an object" })),
  // Text that is not JSON, or valid JSON cut short.
  fc
    .tuple(
      fc.constantFrom(...ALL),
      fc.oneof(
        fc.string({ maxLength: 80 }).filter((s) => {
          try {
            JSON.parse(s);
            return false;
          } catch {
            return true;
          }
        }),
        fc
          .jsonValue({ maxDepth: 3 })
          .map((v) => JSON.stringify({ commands: v }))
          .chain((s) => fc.integer({ min: 1, max: Math.max(1, s.length - 1) }).map((n) => s.slice(0, n))),
      ),
    )
    .map(([procedure, body]) => ({ procedure, body, what: "malformed JSON" })),
  // Random bytes as binary protobuf (AllocateParty left out: a few bytes can spell a valid hint).
  fc
    .tuple(
      fc.constantFrom(
        ...READS.filter((p) => p !== "PartyManagementService/ListParties"),
        ...WRITES.slice(0, 2),
      ),
      fc.uint8Array({ minLength: 1, maxLength: 200 }),
    )
    .map(([procedure, bytes]) => ({
      procedure,
      body: Buffer.from(bytes),
      binary: true,
      what: "malformed protobuf",
    })),
  // A field of the wrong type in an otherwise good submission.
  fc
    .tuple(
      fc.constantFrom(...WRITES.slice(0, 2)),
      fc.constantFrom("userId", "commandId", "submissionId", "incarnation"),
      notString,
    )
    .map(([procedure, field, v]) => ({
      procedure,
      body: JSON.stringify({
        commands: {
          ...command({ create: { template: "Iou", createArguments: iouArgs(alice, alice) } }),
          [field]: v,
        },
      }),
      what: `wrong type of ${field}`,
    })),
  fc
    .tuple(fc.constantFrom(...WRITES.slice(0, 2)), fc.oneof(notString, fc.string()))
    .map(([procedure, actAs]) => ({
      procedure,
      body: JSON.stringify({
        commands: command({ actAs, create: { template: "Iou", createArguments: iouArgs(alice, alice) } }),
      }),
      what: "act_as not a list of strings",
    })),
  fc.tuple(fc.constantFrom(...ALL.slice(0, 5)), notString).map(([procedure, v]) => ({
    procedure,
    body: JSON.stringify({ parties: [v], incarnation: v }),
    what: "wrong type of parties",
  })),
  fc.tuple(notString, fc.option(fc.string(), { nil: undefined })).map(([hint, displayName]) => ({
    procedure: "PartyManagementService/AllocateParty",
    body: JSON.stringify({ partyIdHint: hint, displayName }),
    what: "wrong type of party_id_hint",
  })),
  // Huge strings (under the size limit) where short ones belong.
  hugeString.map((hint) => ({
    procedure: "PartyManagementService/AllocateParty",
    body: JSON.stringify({ partyIdHint: hint }),
    what: "huge party id hint",
  })),
  fc.tuple(fc.constantFrom(...WRITES.slice(0, 2)), hugeString).map(([procedure, s]) => ({
    procedure,
    body: JSON.stringify({
      commands: command({ commandId: s, create: { template: s, createArguments: {} } }),
    }),
    what: "huge command id and template",
  })),
  fc
    .tuple(
      fc.constantFrom(...WRITES.slice(0, 2)),
      hugeString,
      fc.constantFrom("commandId", "userId", "submissionId"),
    )
    .map(([procedure, s, field]) => ({
      procedure,
      body: JSON.stringify({
        commands: command({
          [field]: s,
          create: { template: "Iou", createArguments: iouArgs(alice, alice) },
        }),
      }),
      what: `huge ${field} in a valid create`,
    })),
  fc.tuple(fc.constantFrom(...READS.slice(1, 4)), hugeString).map(([procedure, s]) => ({
    procedure,
    body: JSON.stringify({ parties: [s], incarnation: s, userId: s, template: s }),
    what: "huge party and incarnation",
  })),
  // Deep nesting: in create arguments (a Struct) and where no field is.
  fc.tuple(fc.constantFrom(...WRITES.slice(0, 2)), deep).map(([procedure, nested]) => ({
    procedure,
    body: `{"commands": {"userId": "h", "commandId": "deep", "actAs": ["${alice}"], "create": {"template": "Iou", "createArguments": {"issuer": "${alice}", "owner": "${alice}", "amount": "1.00", "currency": "USD", "extra": ${nested}}}}}`,
    what: "deeply nested create arguments",
  })),
  fc.tuple(fc.constantFrom(...ALL), deep).map(([procedure, nested]) => ({
    procedure,
    body: nested,
    what: "deeply nested JSON",
  })),
  // Offsets: negative, past int64, not integers.
  fc
    .tuple(badOffset, fc.constantFrom("activeAtOffset", "beginExclusive", "endInclusive"))
    .map(([offset, field]) => ({
      procedure: {
        activeAtOffset: "StateService/GetActiveContracts",
        beginExclusive: "UpdateService/GetUpdates",
        endInclusive: "UpdateService/GetUpdates",
      }[field],
      body: JSON.stringify({ parties: [alice], [field]: offset }),
      what: `bad ${field}`,
    })),
  badOffset.map((offset) => ({
    procedure: "CommandCompletionService/CompletionStream",
    body: JSON.stringify({ userId: "hostile", parties: [alice], beginExclusive: offset }),
    what: "bad completion offset",
  })),
  fc.tuple(fc.constantFrom(...WRITES.slice(0, 2)), badOffset).map(([procedure, offset]) => ({
    procedure,
    body: JSON.stringify({
      commands: command({
        deduplicationOffset: offset,
        create: { template: "Iou", createArguments: iouArgs(alice, alice) },
      }),
    }),
    what: "bad deduplication offset",
  })),
  // Unknown templates and choices, with arguments of any shape.
  fc
    .tuple(
      fc.constantFrom(...WRITES.slice(0, 2)),
      notTemplate,
      fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })),
    )
    .map(([procedure, template, args]) => ({
      procedure,
      body: JSON.stringify({ commands: command({ create: { template, createArguments: args } }) }),
      what: "unknown template",
    })),
  fc
    .tuple(
      fc.constantFrom(...WRITES.slice(0, 2)),
      fc.string({ minLength: 1, maxLength: 40 }).filter((c) => c !== "Transfer" && c !== "Archive"),
      fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })),
    )
    .map(([procedure, choice, arg]) => ({
      procedure,
      body: JSON.stringify({
        commands: command({ exercise: { contractId: iouId, choice, choiceArgument: arg } }),
      }),
      what: "unknown choice",
    })),
);

/** Connect's codes (connectrpc.com/docs/protocol#error-codes) that a refusal may carry. */
const REFUSALS = new Set([
  "canceled",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "unavailable",
  "unauthenticated",
]);

test("property: generated bad input is refused with a code, never crashes the node, writes nothing", async () => {
  console.log(`hostile-input: fast-check seed ${seed} (replay with FC_SEED=${seed})`);
  const before = await ledgerState();
  const seen = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(attacks, async (attack) => {
      const r = await send(attack.procedure, attack.body, attack.binary);
      const label = `${attack.what} → ${attack.procedure}: ${JSON.stringify({ ...r, message: r.message?.slice(0, 300) })}`;
      seen.set(
        `${attack.what}: ${r.lockstep ?? r.code ?? "ok"}`,
        (seen.get(`${attack.what}: ${r.lockstep ?? r.code ?? "ok"}`) ?? 0) + 1,
      );
      if (r.status === 200 && r.code === undefined) {
        // Only reads may succeed (an empty or unknown party reads nothing).
        assert.ok(READS.includes(attack.procedure), `a write succeeded: ${label}`);
        return;
      }
      assert.ok(r.code !== undefined && REFUSALS.has(r.code), `no refusal code: ${label}`);
      assert.ok(r.status < 500 || r.code === "unavailable", `5xx: ${label}`);
      // A stream that was valid runs into its deadline; nothing else may be a timeout.
      if (r.code === "deadline_exceeded") assert.ok(STREAMS.has(attack.procedure), label);
    }),
    { seed, numRuns: 150 },
  );
  console.log(
    [...seen]
      .map(([k, n]) => `${n}× ${k}`)
      .sort()
      .join("\n"),
  );
  assert.deepEqual(await ledgerState(), before, "the ledger changed");
  await healthy();
  const pid = network.pid("participant1");
  assert.ok(pid !== undefined, "participant1 still running");
});
