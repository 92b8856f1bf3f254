import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { validateConfig } from "../../src/common/config.ts";
import { configNodes, type NodeEntry } from "../../src/common/config-schema.ts";
import { isLockstepError } from "../../src/common/errors.ts";
import {
  cliClientTls,
  clientTlsKey,
  clientTlsOptions,
  configureClientTls,
  nodeClientTls,
} from "../../src/common/tls-client.ts";
import { autoTlsPaths } from "../../src/common/tls-config.ts";
import { ensureAutoTls } from "../../src/common/tls-issuer.ts";

// Client TLS per caller (src/common/tls-client.ts): a node presents its own certificate, the CLI its
// admin one, whichever nodes share the process; cached connections are keyed by the files presented.

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function autoNetwork() {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-tls-client-"));
  dirs.push(dir);
  const config = validateConfig({
    "data-dir": join(dir, "data"),
    tls: { auto: true, "client-auth": "require" },
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: 4001 },
      mediator: { name: "mediator1", port: 4002 },
    },
    participants: [
      { name: "participant1", port: 4011 },
      { name: "participant2", port: 4012 },
    ],
  });
  const node = (name: string) => configNodes(config).find((n) => n.name === name) as NodeEntry;
  return { config, node, paths: autoTlsPaths(config["data-dir"]) };
}

test("each node presents its own certificate, the CLI the admin one; keys follow the files", async () => {
  const { config, node, paths } = autoNetwork();
  await ensureAutoTls(config);
  configureClientTls(config);
  const p1 = nodeClientTls(config, node("participant1"));
  const p2 = nodeClientTls(config, node("participant2"));
  const cli = cliClientTls(config);
  assert.deepEqual(p1.cert, paths.node("participant1"));
  assert.deepEqual(cli.cert, paths.client);
  assert.deepEqual(p1.caFiles, [paths.ca.cert]);

  assert.deepEqual(clientTlsOptions(p1).cert, readFileSync(paths.node("participant1").cert));
  assert.deepEqual(clientTlsOptions(p2).cert, readFileSync(paths.node("participant2").cert));
  assert.deepEqual(clientTlsOptions(cli).cert, readFileSync(paths.client.cert));
  // The process's default is the CLI's (configureClientTls), not any node's.
  assert.deepEqual(clientTlsOptions().cert, readFileSync(paths.client.cert));

  const keys = new Set([clientTlsKey(p1), clientTlsKey(p2), clientTlsKey(cli)]);
  assert.equal(keys.size, 3, "no two identities share a cached connection");
  assert.equal(clientTlsKey(nodeClientTls(config, node("participant1"))), clientTlsKey(p1));
  assert.equal(clientTlsKey(), clientTlsKey(cli));

  // Configuring again (another config in this process) drops what was read.
  const before = clientTlsKey(p1);
  configureClientTls(config);
  assert.notEqual(clientTlsKey(p1), before);
});

test("a node's missing certificate is an error naming it; the CLI's auto one may come later", async () => {
  const { config, node, paths } = autoNetwork();
  // The CA and sequencer1's certificate only: as after the first node of `up` started elsewhere.
  await ensureAutoTls(config, { nodes: [node("sequencer1")] });
  rmSync(paths.client.cert);
  configureClientTls(config);
  assert.throws(
    () => clientTlsOptions(nodeClientTls(config, node("participant2"))),
    (e) =>
      isLockstepError(e) &&
      e.code === "TLS_FILES_INVALID" &&
      /participant2's client certificate/.test(e.message),
  );
  // Under tls: auto the nodes issue the CLI's certificate at their first start: not yet is no error.
  const cli = cliClientTls(config);
  assert.equal(clientTlsOptions(cli).cert, undefined);
  assert.match(clientTlsKey(cli), /without certificate$/);
  await ensureAutoTls(config);
  assert.ok(clientTlsOptions(cli).cert, "read once issued");
  assert.doesNotMatch(clientTlsKey(cli), /without certificate$/);
});
