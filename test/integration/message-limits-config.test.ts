import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { parse, stringify } from "yaml";
import { readAdminTokenFile } from "../../src/common/admin-credentials.ts";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { runLockstep } from "../support/cli.ts";
import { postConnectJson } from "../support/ledger-client.ts";
import { type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";
import { paddedMessage as padded, rawUnaryCall as rawCall } from "../support/raw-grpc.ts";

// A node's `max-inbound-message-size` from the config, on nodes started by the CLI (`lockstep up
// --detach`): participant1 and the mediator take at most 16 KiB, participant2 keeps the default
// (4 MiB). Larger requests get RESOURCE_EXHAUSTED before any handler runs, over gRPC (grpc-js, as
// Canton's clients) and Connect JSON; smaller ones are served.
const LIMIT = 16 * 1024;

let network: LedgerNetwork;

before(async () => {
  network = await startLedgerNetwork({
    participants: 2,
    configure: (config: ConfigInput) => {
      const [one] = config.participants ?? [];
      assert.ok(one);
      one["max-inbound-message-size"] = LIMIT;
      config.synchronizer.mediator["max-inbound-message-size"] = LIMIT;
    },
  });
});

after(() => network?.down());

const LEDGER_END = "/lockstep.ledger.v1.StateService/GetLedgerEnd";

test("a participant with a configured limit refuses a larger Ledger API request and serves a smaller one", async () => {
  const [one, two] = network.participantPorts as [number, number];
  const under = await rawCall(one, LEDGER_END, padded(LIMIT - 64));
  assert.equal(under.code, grpc.status.OK, under.details);
  const over = await rawCall(one, LEDGER_END, padded(LIMIT + 1));
  assert.equal(over.code, grpc.status.RESOURCE_EXHAUSTED, over.details);
  assert.match(over.details, new RegExp(`larger than configured readMaxBytes ${LIMIT}`));

  // Connect JSON over HTTP/1.1: refused by its size, with Connect's HTTP status for it.
  const json = await postConnectJson(one, "lockstep.ledger.v1.PartyManagementService/AllocateParty", {
    partyIdHint: "x".repeat(LIMIT),
  });
  assert.equal(json.status, 429, JSON.stringify(json.body).slice(0, 300));
  assert.equal(json.body.code, "resource_exhausted");
  // The same request, under the limit, is read (and refused for what it says, not for its size).
  const read = await postConnectJson(one, "lockstep.ledger.v1.PartyManagementService/AllocateParty", {
    partyIdHint: "x".repeat(LIMIT - 1024),
  });
  assert.equal(read.status, 400, JSON.stringify(read.body).slice(0, 300));
  assert.equal(read.body.code, "invalid_argument");

  // participant2 has no setting: the default 4 MiB takes what participant1 refused.
  const other = await rawCall(two, LEDGER_END, padded(LIMIT + 1));
  assert.equal(other.code, grpc.status.OK, other.details);
});

test("the mediator's configured limit applies to its Admin API too", async () => {
  const token = readAdminTokenFile(join(network.dataDir, "admin-token"));
  assert.ok(token);
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const port = network.net.ports.mediator;
  const path = "/lockstep.admin.v1.AdminService/GetStatus";
  const under = await rawCall(port, path, padded(LIMIT - 64), metadata);
  assert.equal(under.code, grpc.status.OK, under.details);
  const over = await rawCall(port, path, padded(LIMIT + 1), metadata);
  assert.equal(over.code, grpc.status.RESOURCE_EXHAUSTED, over.details);
});

test("a limit under 1 KiB is a config error, named by its key path", async () => {
  const config = parse(readFileSync(network.net.configPath, "utf8")) as ConfigInput;
  const [one] = config.participants ?? [];
  assert.ok(one);
  one["max-inbound-message-size"] = 100;
  const bad = join(network.net.dir, "tiny-limit.yaml");
  writeFileSync(bad, stringify(config));
  const r = await runLockstep(["config", "check", "--config", bad]);
  assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
  assert.match(`${r.stdout}${r.stderr}`, /CONFIG_INVALID/);
  assert.match(`${r.stdout}${r.stderr}`, /participants\.0\.max-inbound-message-size/);
});
