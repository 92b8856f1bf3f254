import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import type { ConfigInput } from "../../src/common/config-schema.ts";
import { fromConnectError } from "../../src/common/connect-errors.ts";
import { freePort, LOOPBACK } from "../../src/common/loopback.ts";
import { runLockstep } from "../support/cli.ts";
import type { LedgerClients } from "../support/ledger-client.ts";
import { type LedgerNetwork, startLedgerNetwork } from "../support/ledger-network.ts";

// `ledger-api.auth: { type: jwks, jwks-url }` on real participants (`lockstep up --detach`), the key
// sets served by node:http servers in this test, as an identity provider would publish them.
// participant1's URL serves an RS256 and an ES256 key; participant2's URL starts with nothing
// listening, then answers in the ways a broken identity provider does, then with the keys.
const AUDIENCE = "https://lockstep.test/jwks-participant";

type Mode = "keys" | "503" | "not-json" | "not-a-jwks" | "reset" | "hang";

interface JwksServer {
  url: string;
  mode: Mode;
  requests: number;
  start(): Promise<void>;
  close(): Promise<void>;
}

let network: LedgerNetwork;
let p1: LedgerClients;
let p2: LedgerClients;
let rsa: CryptoKey;
let ec: CryptoKey;
let jwks: { keys: JWK[] };
let idp1: JwksServer;
let idp2: JwksServer;

/** A JWKS endpoint on `port` (0: any) whose answers follow `mode`. */
function jwksServer(port: number): JwksServer {
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    self.requests++;
    if (req.url !== "/.well-known/jwks.json") return void res.writeHead(404).end();
    switch (self.mode) {
      case "keys":
        return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(jwks));
      case "503":
        return void res.writeHead(503).end("maintenance");
      case "not-json":
        return void res.writeHead(200, { "content-type": "application/json" }).end("<html>login</html>");
      case "not-a-jwks":
        return void res.writeHead(200, { "content-type": "application/json" }).end('{"keys": "none"}');
      case "reset":
        return void req.socket.destroy();
      case "hang":
        hanging.add(res);
    }
  });
  const self: JwksServer = {
    url: "",
    mode: "keys",
    requests: 0,
    start: () =>
      new Promise((resolve) =>
        server.listen(port, LOOPBACK, () => {
          self.url = `http://${LOOPBACK}:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
          resolve();
        }),
      ),
    close: () =>
      new Promise((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  if (port) self.url = `http://${LOOPBACK}:${port}/.well-known/jwks.json`;
  return self;
}

function sign(
  alg: "RS256" | "ES256",
  kid: string,
  key: CryptoKey,
  sub = "participant_admin",
  aud = AUDIENCE,
): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg, kid })
    .setSubject(sub)
    .setAudience(aud)
    .setExpirationTime("10m")
    .sign(key);
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

async function refusal(call: Promise<unknown>) {
  try {
    await call;
  } catch (error) {
    const lockstep = fromConnectError(error);
    assert.ok(lockstep && error instanceof ConnectError, `expected a Lockstep error, got ${String(error)}`);
    return {
      code: lockstep.code,
      grpc: error.code,
      retryable: lockstep.retryable,
      message: lockstep.message,
    };
  }
  assert.fail("the call was not refused");
}

before(async () => {
  const rsaPair = await generateKeyPair("RS256", { extractable: true });
  const ecPair = await generateKeyPair("ES256", { extractable: true });
  rsa = rsaPair.privateKey;
  ec = ecPair.privateKey;
  jwks = {
    keys: [
      { ...(await exportJWK(rsaPair.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
      { ...(await exportJWK(ecPair.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
    ],
  };
  idp1 = jwksServer(0);
  await idp1.start();
  // Nothing listens on idp2's port until the last test starts it.
  idp2 = jwksServer(await freePort());
  network = await startLedgerNetwork({
    participants: 2,
    configure: (config: ConfigInput) => {
      const [one, two] = config.participants ?? [];
      assert.ok(one && two);
      one["ledger-api"] = { auth: { type: "jwks", "jwks-url": idp1.url, audience: AUDIENCE } };
      two["ledger-api"] = { auth: { type: "jwks", "jwks-url": idp2.url, audience: AUDIENCE } };
    },
  });
  [p1, p2] = network.clients as [LedgerClients, LedgerClients];
});

after(async () => {
  await network?.down();
  await idp1?.close();
  await idp2?.close();
});

test("RS256 and ES256 tokens verify against the keys fetched from the JWKS URL; others are UNAUTHENTICATED", async () => {
  const end = await p1.state.getLedgerEnd({}, bearer(await sign("RS256", "rsa-1", rsa)));
  assert.equal(end.offset, 0n);
  assert.ok(idp1.requests >= 1, "the participant fetched the key set");
  assert.equal((await p1.state.getLedgerEnd({}, bearer(await sign("ES256", "ec-1", ec)))).offset, 0n);

  const { privateKey: strangerRsa } = await generateKeyPair("RS256");
  const { privateKey: strangerEc } = await generateKeyPair("ES256");
  const unauthenticated = { code: "UNAUTHENTICATED", grpc: Code.Unauthenticated };
  for (const [what, token] of [
    // A key not in the set, under a kid that is: the signature does not verify.
    ["another RSA key under kid rsa-1", await sign("RS256", "rsa-1", strangerRsa)],
    // A kid the set does not have (jose looks it up again at most every 30 s).
    ["an unknown kid", await sign("ES256", "ec-unknown", strangerEc)],
    ["the wrong audience", await sign("RS256", "rsa-1", rsa, "participant_admin", "https://elsewhere")],
  ] as const) {
    const r = await refusal(p1.state.getLedgerEnd({}, bearer(token)));
    assert.deepEqual({ code: r.code, grpc: r.grpc }, unauthenticated, what);
  }
  // Refused through the CLI too.
  const cli = await runLockstep([
    "ledger",
    "end",
    "--participant",
    "participant1",
    "--json",
    "--token",
    await sign("RS256", "rsa-1", strangerRsa),
    ...network.cfg,
  ]);
  assert.notEqual(cli.code, 0);
  assert.match(`${cli.stdout}${cli.stderr}`, /UNAUTHENTICATED/);
});

test("a JWKS URL that cannot give keys: JWKS_UNAVAILABLE (UNAVAILABLE, retryable), then served once it can", async () => {
  const token = bearer(await sign("RS256", "rsa-1", rsa));
  const unavailable = async (reason: RegExp) => {
    const r = await refusal(p2.state.getLedgerEnd({}, token));
    assert.equal(r.code, "JWKS_UNAVAILABLE", r.message);
    assert.equal(r.grpc, Code.Unavailable);
    assert.equal(r.retryable, true);
    assert.ok(r.message.includes(idp2.url), r.message);
    assert.match(r.message, reason);
  };
  // Nothing listening.
  await unavailable(/ECONNREFUSED/);
  const cli = await runLockstep([
    "ledger",
    "end",
    "--participant",
    "participant2",
    "--json",
    "--token",
    await sign("RS256", "rsa-1", rsa),
    ...network.cfg,
  ]);
  assert.equal(cli.code, 1, `${cli.stdout}${cli.stderr}`);
  assert.match(`${cli.stdout}${cli.stderr}`, /JWKS_UNAVAILABLE/);

  // Listening, but broken in the usual ways; a failed fetch is not cached, every call tries again.
  await idp2.start();
  for (const [mode, reason] of [
    ["503", /HTTP 503/],
    ["not-json", /not JSON/],
    ["not-a-jwks", /not a JSON Web Key Set/],
    ["reset", /UND_ERR_SOCKET|ECONNRESET|closed/],
    ["hang", /no answer within 5000 ms/],
  ] as const) {
    idp2.mode = mode;
    await unavailable(reason);
  }
  idp2.mode = "keys";
  assert.equal((await p2.state.getLedgerEnd({}, token)).offset, 0n);
});
