import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadConfig } from "../../src/common/config.ts";
import type { ErrorCodeName } from "../../src/common/error-codes.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import {
  generateWrapperKeyFile,
  loadWrapperKey,
  openPrivateKey,
  privateKeyProtection,
  sealPrivateKey,
  type WrapperKey,
  WrapperKeyring,
  wrapperFingerprint,
} from "../../src/crypto/key-wrapping.ts";
import { exportPrivateKey, generateKeyPair } from "../../src/crypto/keys.ts";

const dir = mkdtempSync(join(tmpdir(), "lockstep-wrapping-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function keyFile(): WrapperKey {
  return generateWrapperKeyFile(join(dir, `wrapper-${++files}.key`));
}

const is = (code: ErrorCodeName, text?: string) => (error: unknown) =>
  isLockstepError(error, code) && (text === undefined || error.message.includes(text));

function plainKey() {
  const pair = generateKeyPair("signing");
  return { fingerprint: pair.fingerprint, pkcs8: exportPrivateKey(pair.privateKey) };
}

test("seal and open: round trip, a fresh nonce each time, nothing of the key in the sealed bytes", () => {
  const wrapper = keyFile();
  const { fingerprint, pkcs8 } = plainKey();
  const sealed = sealPrivateKey(wrapper, fingerprint, pkcs8);
  assert.deepEqual(openPrivateKey(wrapper, fingerprint, sealed), pkcs8);
  assert.notDeepEqual(sealPrivateKey(wrapper, fingerprint, pkcs8), sealed, "a fresh nonce per seal");
  assert.equal(sealed.length, 1 + 12 + pkcs8.length + 16);
  const seed = pkcs8.subarray(pkcs8.length - 32);
  assert.equal(sealed.includes(seed), false, "the Ed25519 seed does not appear in the sealed form");
});

test("open refuses another wrapper key, another key's fingerprint (AAD), tampered and malformed bytes", () => {
  const wrapper = keyFile();
  const other = keyFile();
  const { fingerprint, pkcs8 } = plainKey();
  const sealed = sealPrivateKey(wrapper, fingerprint, pkcs8);
  assert.throws(() => openPrivateKey(other, fingerprint, sealed), is("INTERNAL_ERROR", "does not open"));
  // The sealed bytes of one key copied onto another key's row do not open there.
  const { fingerprint: another } = plainKey();
  assert.throws(() => openPrivateKey(wrapper, another, sealed), is("INTERNAL_ERROR", "does not open"));
  const tampered = Buffer.from(sealed);
  tampered[20] = (tampered[20] as number) ^ 1;
  assert.throws(() => openPrivateKey(wrapper, fingerprint, tampered), is("INTERNAL_ERROR", "does not open"));
  assert.throws(() => openPrivateKey(wrapper, fingerprint, sealed.subarray(0, 20)), is("INTERNAL_ERROR"));
  const version = Buffer.from(sealed);
  version[0] = 2;
  assert.throws(() => openPrivateKey(wrapper, fingerprint, version), is("INTERNAL_ERROR", "malformed"));
});

test("wrapper key files: 64 hex digits (white space around ignored), else WRAPPER_KEY_FILE_INVALID", () => {
  const hex = "a1".repeat(32);
  const path = join(dir, "hand-written.key");
  writeFileSync(path, `  ${hex.toUpperCase()}\n\n`);
  const loaded = loadWrapperKey(path);
  assert.deepEqual(loaded.key, Buffer.from(hex, "hex"));
  assert.equal(loaded.fingerprint, wrapperFingerprint(Buffer.from(hex, "hex")));
  assert.match(loaded.fingerprint, /^1220[0-9a-f]{64}$/);
  assert.equal(loaded.fingerprint.includes(hex), false, "the fingerprint does not reveal the key");
  assert.equal(loaded.source, path);

  for (const [name, text] of [
    ["short.key", "a1".repeat(31)],
    ["long.key", "a1".repeat(33)],
    ["not-hex.key", "zz".repeat(32)],
    ["empty.key", ""],
    ["two-lines.key", `${"a1".repeat(16)}\n${"a1".repeat(16)}`],
  ] as const) {
    writeFileSync(join(dir, name), text);
    assert.throws(
      () => loadWrapperKey(join(dir, name)),
      is("WRAPPER_KEY_FILE_INVALID", "64 hex digits"),
      name,
    );
  }
  assert.throws(() => loadWrapperKey(join(dir, "missing.key")), is("WRAPPER_KEY_FILE_INVALID", "ENOENT"));
});

test("generateWrapperKeyFile writes an owner-only file once and never overwrites it", () => {
  const path = join(dir, "generated.key");
  const generated = generateWrapperKeyFile(path);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(loadWrapperKey(path).fingerprint, generated.fingerprint);
  assert.throws(() => generateWrapperKeyFile(path), is("WRAPPER_KEY_FILE_INVALID", "EEXIST"));
  assert.equal(loadWrapperKey(path).fingerprint, generated.fingerprint, "the first key is kept");
  assert.notEqual(keyFile().fingerprint, generated.fingerprint);
});

test("a keyring seals under its current key, opens under previous ones, names a missing one", () => {
  const a = keyFile();
  const b = keyFile();
  const { fingerprint, pkcs8 } = plainKey();
  const underA = sealPrivateKey(a, fingerprint, pkcs8);

  const ring = new WrapperKeyring("participant1", b, [a]);
  assert.equal(ring.current, b.fingerprint);
  assert.deepEqual(ring.open(fingerprint, a.fingerprint, underA), pkcs8, "opens under a previous key");
  assert.deepEqual(ring.open(fingerprint, b.fingerprint, ring.seal(fingerprint, pkcs8)), pkcs8);
  assert.deepEqual(ring.open(fingerprint, null, pkcs8), pkcs8, "a row in plain is read as it is");
  assert.throws(() => openPrivateKey(a, fingerprint, ring.seal(fingerprint, pkcs8)), "sealed under b, not a");

  const onlyB = new WrapperKeyring("participant1", b);
  assert.throws(
    () => onlyB.open(fingerprint, a.fingerprint, underA),
    is("MISSING_WRAPPER_KEY", a.fingerprint),
    "a row under a key not configured is refused, naming the key",
  );
  const plain = privateKeyProtection("participant1", {});
  assert.equal(plain.current, null);
  assert.deepEqual(plain.seal(fingerprint, pkcs8), pkcs8, "without encryption, keys stay in plain");
  assert.throws(
    () => plain.open(fingerprint, a.fingerprint, underA),
    (e: unknown) => {
      return (
        is("MISSING_WRAPPER_KEY", "participant1")(e) && String((e as Error).message).includes(a.fingerprint)
      );
    },
  );

  const configured = privateKeyProtection("participant1", {
    "private-key-encryption": { "wrapper-key-file": b.source, "previous-wrapper-key-files": [a.source] },
  });
  assert.equal(configured.current, b.fingerprint);
  assert.deepEqual([...configured.wrappers.keys()].sort(), [a.fingerprint, b.fingerprint].sort());
});

test("wrapper key files in the config resolve against the config file's directory", async () => {
  const base = join(dir, "etc");
  mkdirSync(base);
  writeFileSync(
    join(base, "net.yaml"),
    `synchronizer:
  id: sync1
  sequencer: { name: sequencer1, port: 4001 }
  mediator: { name: mediator1, port: 4002 }
participants:
  - name: participant1
    port: 4011
    crypto:
      private-key-encryption:
        wrapper-key-file: keys/current.key
        previous-wrapper-key-files: [keys/old.key, /abs/older.key]
`,
  );
  const { config } = await loadConfig({ path: join(base, "net.yaml"), env: {} });
  assert.deepEqual(config.participants[0]?.crypto["private-key-encryption"], {
    "wrapper-key-file": join(base, "keys", "current.key"),
    "previous-wrapper-key-files": [join(base, "keys", "old.key"), "/abs/older.key"],
  });
  assert.equal(config.synchronizer.sequencer.crypto["private-key-encryption"], undefined);
});
