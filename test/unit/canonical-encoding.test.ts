import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  manifestChecksum,
  type NodeBackup,
  type SequencerPosition,
  type UnsignedManifest,
} from "../../src/backup/manifest.ts";
import { canonicalJson } from "../../src/common/canonical-json.ts";
import { sha256Hex } from "../../src/common/hash.ts";
import { importPrivateKey, keyPairFromPrivateKey } from "../../src/crypto/keys.ts";
import {
  serializeTopologyTransaction,
  signTopologyTransaction,
  type TopologyTransaction,
} from "../../src/crypto/topology-transaction.ts";
import { deriveContractId } from "../../src/ledger/contract.ts";
import { ledgerJson } from "../../src/ledger/ledger-value.ts";

// Golden bytes: what the ledger, topology and manifest encodings produce today. These bytes are
// signed or hashed (contract ids, topology signatures, manifest checksums), so any change here
// breaks signatures and checksums already stored: a failure is a bug, not a value to update.

// A fixed Ed25519 key (PKCS8 DER of the seed 0x01..0x20): signatures are deterministic.
const SEED = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1));
const NAMESPACE_KEY = keyPairFromPrivateKey(
  importPrivateKey(Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), SEED])),
  "namespace",
);

const LEDGER_VALUE = {
  zeta: "last",
  amount: "100.5000000000",
  count: 42,
  ratio: 0.1,
  big: 1e21,
  tiny: 5e-7,
  negative: -17,
  negativeZero: -0,
  maxSafe: Number.MAX_SAFE_INTEGER,
  flag: true,
  nothing: null,
  omitted: undefined,
  unicode: 'é\u2028"\\\n',
  list: [1, "two", [3], { b: 2, a: 1 }, null, false],
  nested: { Z: { y: [], x: {} }, "a-b": 1, a: 2, "": 0, é: 3, "\u00e0": 4 },
};

describe("golden bytes: ledger values (ledgerJson of ledger-value.ts)", () => {
  test("a record with decimals, integers, floats, -0, null, undefined and nested records", () => {
    const json = ledgerJson(LEDGER_VALUE);
    assert.equal(json, GOLDEN.ledgerJson);
    assert.equal(sha256Hex(json), GOLDEN.ledgerSha256);
  });

  test("non-finite numbers and bigints are refused", () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1n, [undefined]]) {
      assert.throws(() => ledgerJson({ v: bad }), TypeError);
    }
    assert.throws(() => ledgerJson(undefined), TypeError);
  });

  test("a contract id derived over canonical arguments", () => {
    const id = deriveContractId({
      template: "Iou",
      arguments: { issuer: "bank::1220aa", owner: "alice::1220bb", amount: "10.0", currency: "EUR", n: 3 },
      signatories: ["bank::1220aa"],
      observers: ["alice::1220bb"],
      createdAt: 1_700_000_000_000_000n,
      salt: "00ff",
    });
    assert.equal(id, GOLDEN.contractId);
  });
});

const TOPOLOGY_TX: TopologyTransaction = {
  operation: "add",
  serial: 3,
  mapping: {
    type: "SynchronizerParameters",
    ledgerTimeRecordTimeToleranceMs: 60_000,
    participantResponseTimeoutMs: 30_000,
    maxDeduplicationDurationMs: Number.MAX_SAFE_INTEGER,
  },
};

describe("golden bytes: topology transactions (topology-transaction.ts)", () => {
  test("the signed bytes, their hash and the signature", () => {
    const bytes = serializeTopologyTransaction(TOPOLOGY_TX);
    assert.equal(bytes.toString("utf8"), GOLDEN.topologyBytes);
    const signed = signTopologyTransaction(TOPOLOGY_TX, NAMESPACE_KEY);
    assert.equal(signed.hash, GOLDEN.topologyHash);
    assert.equal(signed.signature.toString("hex"), GOLDEN.topologySignature);
  });

  test("member keys: nested arrays of records", () => {
    const fp = NAMESPACE_KEY.fingerprint;
    const tx: TopologyTransaction = {
      operation: "remove",
      serial: 1,
      mapping: {
        type: "MemberKeys",
        member: `participant1::${fp}`,
        namespaceKey: NAMESPACE_KEY.publicKey.toString("hex"),
        signingKeys: [{ publicKey: NAMESPACE_KEY.publicKey.toString("hex"), fingerprint: fp }],
      },
    };
    const signed = signTopologyTransaction(tx, NAMESPACE_KEY);
    assert.equal(signed.bytes.toString("utf8"), GOLDEN.memberKeysBytes);
    assert.equal(signed.hash, GOLDEN.memberKeysHash);
    assert.equal(signed.signature.toString("hex"), GOLDEN.memberKeysSignature);
  });

  test("numbers that are not safe integers are refused", () => {
    for (const bad of [0.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const tx = { ...TOPOLOGY_TX, mapping: { ...TOPOLOGY_TX.mapping, participantResponseTimeoutMs: bad } };
      assert.throws(() => serializeTopologyTransaction(tx as TopologyTransaction));
    }
  });
});

const HASH_A = "a".repeat(64);
const HASH_B = "b".repeat(64);
const MANIFEST: UnsignedManifest = {
  manifestVersion: 2,
  id: "20260101T000000Z-abcdef",
  lockstepVersion: "0.1.0",
  synchronizerId: "sync::1220cc",
  mode: "ordered",
  startedAt: "2026-01-01T00:00:00.000Z",
  finishedAt: "2026-01-01T00:00:05.000Z",
  appHook: {
    command: "sync; true",
    exitCode: 0,
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: "2026-01-01T00:00:01.000Z",
  },
  nodes: [
    {
      kind: "sequencer",
      name: "sequencer",
      member: null,
      synchronizerId: "sync::1220cc",
      incarnation: "inc-1",
      writerEpoch: "2",
      format: "custom",
      artifact: "sequencer.dump",
      files: [{ path: "sequencer.dump", bytes: "1234", sha256: HASH_A }],
      bytes: "1234",
      database: "lockstep_sequencer",
      postgres: { version: "15.8", systemIdentifier: "7300000000000000001" },
      keyFingerprints: ["1220dd"],
      startedAt: "2026-01-01T00:00:02.000Z",
      finishedAt: "2026-01-01T00:00:03.000Z",
      position: {
        head: "1700000000000000",
        members: { "participant1::1220ee": "1699999999999999", "mediator::1220ff": null },
        pruningLowerBound: null,
        memberEvents: {
          "participant1::1220ee": { timestamp: "1699999999999999", known: true, chainHash: HASH_B },
        },
      },
    },
    {
      kind: "participant",
      name: "participant1",
      member: "participant1::1220ee",
      synchronizerId: "sync::1220cc",
      incarnation: "inc-2",
      writerEpoch: "1",
      format: "tar",
      artifact: "participant1.tar",
      files: [{ path: "participant1.tar", bytes: "99", sha256: HASH_B }],
      bytes: "99",
      database: "lockstep_participant1",
      postgres: { version: "15.8", systemIdentifier: "7300000000000000002" },
      keyFingerprints: [],
      startedAt: "2026-01-01T00:00:00.500Z",
      finishedAt: "2026-01-01T00:00:01.500Z",
      position: {
        clean: "1699999999999999",
        ledgerEnd: "12",
        lastStored: { timestamp: "1699999999999999", chainHash: HASH_B },
      },
    },
  ],
  orderCheck: "checked",
  checkedAgainst: null,
  safe: true,
  unsafe: [],
  bytes: "1333",
};

describe("golden bytes: backup manifest checksum (manifest.ts)", () => {
  test("the checksum of a manifest (the checksum field itself is left out)", () => {
    assert.equal(manifestChecksum(MANIFEST), GOLDEN.manifestChecksum);
    assert.equal(
      manifestChecksum({ ...MANIFEST, checksum: "0".repeat(64) } as UnsignedManifest),
      GOLDEN.manifestChecksum,
    );
  });

  test("an optional field left undefined hashes as if absent", () => {
    const [sequencer, participant] = MANIFEST.nodes as [NodeBackup, NodeBackup];
    const { memberEvents: _dropped, ...withoutEvents } = sequencer.position as SequencerPosition;
    const absent = { ...sequencer, position: withoutEvents } as NodeBackup;
    const undefinedField = {
      ...sequencer,
      position: { ...withoutEvents, memberEvents: undefined },
    } as NodeBackup;
    for (const node of [absent, undefinedField]) {
      assert.equal(
        manifestChecksum({ ...MANIFEST, nodes: [node, participant] }),
        GOLDEN.manifestWithoutMemberEvents,
      );
    }
  });
});

describe("the shared encoding's number policy (common/canonical-json.ts)", () => {
  test("finite: any finite number; safe-integer: integers only", () => {
    assert.equal(canonicalJson({ b: 0.5, a: -0 }, "finite"), '{"a":0,"b":0.5}');
    assert.equal(canonicalJson({ b: 7, a: -0 }, "safe-integer"), '{"a":0,"b":7}');
    assert.throws(() => canonicalJson(0.5, "safe-integer"), TypeError);
    assert.throws(() => canonicalJson(Number.MAX_SAFE_INTEGER + 1, "safe-integer"), TypeError);
  });

  test("both refuse non-finite numbers, bigints and undefined outside object fields", () => {
    for (const numbers of ["finite", "safe-integer"] as const) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, 1n, undefined, [undefined], () => 1]) {
        assert.throws(() => canonicalJson(bad, numbers), TypeError);
      }
      assert.equal(canonicalJson({ a: undefined, b: null }, numbers), '{"b":null}');
    }
  });
});

const GOLDEN = {
  ledgerJson:
    '{"amount":"100.5000000000","big":1e+21,"count":42,"flag":true,"list":[1,"two",[3],{"a":1,"b":2},null,false],"maxSafe":9007199254740991,"negative":-17,"negativeZero":0,"nested":{"":0,"Z":{"x":{},"y":[]},"a":2,"a-b":1,"\u00e0":4,"\u00e9":3},"nothing":null,"ratio":0.1,"tiny":5e-7,"unicode":"\u00e9\u2028\\"\\\\\\n","zeta":"last"}',
  ledgerSha256: "064aeb7e6a900cdea3f03668e30f408032b555cd1fcb07f4339abf7661a33ea0",
  contractId: "00f8c1c00767a5fae0bc8200a4652099e05c577377f78cceb63f18f2d795729d79",
  topologyBytes:
    '{"mapping":{"ledgerTimeRecordTimeToleranceMs":60000,"maxDeduplicationDurationMs":9007199254740991,"participantResponseTimeoutMs":30000,"type":"SynchronizerParameters"},"operation":"add","serial":3}',
  topologyHash: "755934c18f93e1544e735a4488dd645e7306683bf971572bfa4b1e6a677ebeea",
  topologySignature:
    "caa624660d914b37751da3263cd7fe3968cd73ff7ad2d85b0b18cba008f95ca8d1b2f6b1749c73a70477da515b071cd33010e0b987f3cfa99766781b276b920d",
  memberKeysBytes:
    '{"mapping":{"member":"participant1::122065b60673d6ed884bf01c2c222d82ada0740f29ac3355d6a925c81f17f47a27b8","namespaceKey":"79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664","signingKeys":[{"fingerprint":"122065b60673d6ed884bf01c2c222d82ada0740f29ac3355d6a925c81f17f47a27b8","publicKey":"79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"}],"type":"MemberKeys"},"operation":"remove","serial":1}',
  memberKeysHash: "84cf2da7e578d3e0fffcd3911ef7007841cb8c9400ae56679dcb71f84faca7a1",
  memberKeysSignature:
    "45fc1bca230baf880a46f1b57dc82979667ab0c444e1794577fc405549cb51dba53e2e93f72bdba7247af4cf1069a6d7f8aed4a1c72bcbde2e7f961cccd4e007",
  manifestChecksum: "57837239fa3ab23f8e56df15c8cffdf23f3cfca81e62fe6533b7515c402cd593",
  manifestWithoutMemberEvents: "1622317c5ceeb5fe41d487d93d921c0d32cc05d315836c2c01415eae8347348c",
};
