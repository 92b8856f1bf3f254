import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ConfigError, loadConfig } from "../../src/common/config.ts";
import { configNodes, type LockstepConfig, type NodeEntry } from "../../src/common/config-schema.ts";
import { nodeEndpoint } from "../../src/common/node-endpoint.ts";
import {
  autoTlsPaths,
  certificateHosts,
  cliClientCertificate,
  tlsRequirementProblem,
  trustedCaFiles,
} from "../../src/common/tls-config.ts";
import { parseSubjectAltName } from "../../src/node/tls-peer.ts";

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Loads `text` as <fresh dir>/lockstep.yaml; returns the config and the dir. */
async function load(text: string): Promise<{ config: LockstepConfig; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-tls-config-"));
  dirs.push(dir);
  writeFileSync(join(dir, "lockstep.yaml"), text);
  const { config } = await loadConfig({ path: join(dir, "lockstep.yaml"), env: {} });
  return { config, dir };
}

function network(top: string, sequencer = "", participant = ""): string {
  return `data-dir: data
${top}
synchronizer:
  id: sync1
  sequencer: { name: sequencer1, port: 4001${sequencer} }
  mediator: { name: mediator1, port: 4002 }
participants:
  - { name: participant1, port: 4011${participant} }
`;
}

const node = (config: LockstepConfig, name: string) =>
  configNodes(config).find((n) => n.name === name) as NodeEntry;

test("tls: auto gives every node the certificate issued under the data dir and an https URL", async () => {
  const { config, dir } = await load(network("tls: auto"));
  const paths = autoTlsPaths(join(dir, "data"));
  for (const entry of configNodes(config)) {
    assert.deepEqual(entry.config.tls, {
      ...paths.node(entry.name),
      ca: paths.ca.cert,
      "client-auth": "none",
    });
    assert.match(nodeEndpoint(entry).url, /^https:\/\/127\.0\.0\.1:40\d\d$/);
  }
  assert.deepEqual(trustedCaFiles(config), [paths.ca.cert]);
  assert.deepEqual(cliClientCertificate(config), paths.client);
});

test("a node's own tls wins over the network's; paths are relative to the config file", async () => {
  const { config, dir } = await load(
    network(
      "tls: { auto: true, client-auth: require, ca: certs/ca.pem }",
      ", tls: off",
      ", tls: { cert: certs/p1.crt, key: certs/p1.key, client-auth: optional }",
    ),
  );
  assert.equal(node(config, "sequencer1").config.tls, "off");
  assert.match(nodeEndpoint(node(config, "sequencer1")).url, /^http:/);
  assert.deepEqual(node(config, "participant1").config.tls, {
    cert: join(dir, "certs/p1.crt"),
    key: join(dir, "certs/p1.key"),
    ca: join(dir, "certs/ca.pem"),
    "client-auth": "optional",
  });
  // The mediator has none of its own: the network's auto certificate, with the network's CA and client-auth.
  assert.deepEqual(node(config, "mediator1").config.tls, {
    ...autoTlsPaths(join(dir, "data")).node("mediator1"),
    ca: join(dir, "certs/ca.pem"),
    "client-auth": "require",
  });
});

test("without tls a loopback node needs none; any other bind address needs TLS or an explicit tls: off", async () => {
  const plain = await load(network("", ", host: 0.0.0.0", ", host: 127.0.0.5"));
  assert.equal(node(plain.config, "mediator1").config.tls, undefined);
  assert.equal(tlsRequirementProblem(node(plain.config, "mediator1")), undefined);
  assert.equal(tlsRequirementProblem(node(plain.config, "participant1")), undefined);
  assert.deepEqual(tlsRequirementProblem(node(plain.config, "sequencer1")), { host: "0.0.0.0" });

  const off = await load(network("tls: off", ", host: 0.0.0.0"));
  assert.equal(tlsRequirementProblem(node(off.config, "sequencer1")), undefined);
  const nodeOff = await load(network("", ", host: 0.0.0.0, tls: off"));
  assert.equal(tlsRequirementProblem(node(nodeOff.config, "sequencer1")), undefined);
  const auto = await load(network("tls: auto", ", host: 0.0.0.0"));
  assert.equal(tlsRequirementProblem(node(auto.config, "sequencer1")), undefined);
});

test("a tls section with wrong keys or values is a config error naming the key", async () => {
  for (const [text, path] of [
    [network("", ", tls: { cert: a.crt }"), /synchronizer\.sequencer\.tls/],
    [network("tls: { auto: true, client-auth: sometimes }"), /^tls/],
    [network("tls: on"), /^tls/],
    [network("", "", ", tls: { cert: a, key: b, verify: no }"), /participants\.0\.tls/],
  ] as const) {
    const error = await load(text).then(
      () => assert.fail(`expected CONFIG_INVALID for ${text}`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ConfigError, String(error));
    assert.ok(
      error.issues.some((i) => path.test(i.path)),
      `${JSON.stringify(error.issues)} names ${path}`,
    );
  }
});

test("a certificate names where the node binds and is reached, and the loopback", async () => {
  const { config } = await load(
    network("tls: auto", ", host: 0.0.0.0, address: seq.example:4001", ", host: 10.1.2.3"),
  );
  assert.deepEqual(certificateHosts(node(config, "sequencer1"), ["192.0.2.7"]), {
    ips: ["127.0.0.1", "::1", "192.0.2.7"],
    dns: ["localhost", "seq.example"],
  });
  assert.deepEqual(certificateHosts(node(config, "participant1"), ["192.0.2.7"]), {
    ips: ["127.0.0.1", "::1", "10.1.2.3"],
    dns: ["localhost"],
  });
});

test("a peer certificate's names as node:crypto writes them", () => {
  assert.deepEqual(
    parseSubjectAltName('DNS:localhost, IP Address:127.0.0.1, URI:urn:lockstep:node:p1, DNS:"a, b"'),
    { uris: ["urn:lockstep:node:p1"], dnsNames: ["localhost", "a, b"], ipAddresses: ["127.0.0.1"] },
  );
});
