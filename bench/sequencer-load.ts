/**
 * The load side of bench/sequencer.ts, in a worker thread (so that clients and the sequencer use
 * both cores): two members, each subscribed, and many concurrent senders addressing both.
 * The members send through the real sequencer client (createSequencerClient, each on its own
 * database), so its send coalescing (SendBatch) is what is measured; the subscribers read the raw
 * Subscribe stream (signed with the member's key), so that the figure is the sequencer's delivery
 * rate, not the members' own per-event processing transactions.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { parentPort, workerData } from "node:worker_threads";
import { silentLogger } from "../src/common/logging.ts";
import { createNodeClient, nodeBaseUrl } from "../src/common/rpc-client.ts";
import { nowMicros } from "../src/common/time.ts";
import { KeyStore } from "../src/crypto/key-store.ts";
import { keyStoreMigrations } from "../src/crypto/key-store-migrations.ts";
import { SequencerService } from "../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { createSequencerClient } from "../src/sequencer-client/create-sequencer-client.ts";
import { sequencerClientMigrations } from "../src/sequencer-client/sequencer-client-migrations.ts";
import { subscribeRequest } from "../src/sequencer-client/sequencer-requests.ts";
import { runMigrations } from "../src/storage/migrations.ts";
import { createPgDb } from "../src/storage/pg-db.ts";
import { messagePayload } from "../test/support/sequencer-harness.ts";

export interface LoadSettings {
  port: number;
  seconds: number;
  warmupSeconds: number;
  senders: number;
  /** Member names (fresh members per run). */
  memberNames: [string, string];
  /** One database per member (its key store and client state). */
  memberDatabaseUrls: [string, string];
}

export interface LoadResult {
  sentInWindow: number;
  deliveredInWindow: [number, number];
  totalSent: number;
  totalDelivered: [number, number];
  failedSends: number;
}

const settings = workerData as LoadSettings;
const url = nodeBaseUrl(settings.port);
const rpc = createNodeClient(SequencerService, url);
const members = await Promise.all(
  settings.memberDatabaseUrls.map(async (connectionString, i) => {
    const db = createPgDb({ connectionString, max: 4 });
    await runMigrations(db, "bench-member", [...sequencerClientMigrations, ...keyStoreMigrations]);
    const client = createSequencerClient({
      db,
      logger: silentLogger(settings.memberNames[i] as string),
      memberName: settings.memberNames[i] as string,
      sequencerUrl: url,
      identity: () => ({ writerEpoch: 1n }),
      onFatal: (error) => {
        throw error;
      },
    });
    const registration = await client.register();
    return { db, client, id: registration.member };
  }),
);
const recipients = members.map((m) => m.id);
const payload = messagePayload("hello");
const delivered: [number, number] = [0, 0];
const stopSubscribers = new AbortController();
const subscribers = members.map(async (member, i) => {
  const signing = await new KeyStore(member.db).activeSigningKey();
  const request = subscribeRequest(
    { member: member.id, fromTimestamp: null, writerEpoch: 1n, issuedAt: nowMicros() },
    signing,
  );
  try {
    for await (const response of rpc.subscribe(request, { signal: stopSubscribers.signal })) {
      for (const e of response.events) if (e.messageId.startsWith("bench-")) delivered[i as 0 | 1]++;
    }
  } catch (error) {
    if (!stopSubscribers.signal.aborted) throw error;
  }
});

let sent = 0;
let failedSends = 0;
let sending = true;
let counter = 0;
const senders = Array.from({ length: settings.senders }, async (_, i) => {
  const member = members[i % 2] as (typeof members)[number];
  while (sending) {
    try {
      await member.client.send({ recipients, payload, messageId: `bench-${i}-${counter++}` });
      sent++;
    } catch {
      failedSends++;
    }
  }
});

await sleep(settings.warmupSeconds * 1000);
const start = { sent, delivered: [...delivered] };
parentPort?.postMessage({ type: "window-start" });
await sleep(settings.seconds * 1000);
const end = { sent, delivered: [...delivered] };
parentPort?.postMessage({ type: "window-end" });
sending = false;
await Promise.all(senders);
// Every acknowledged send must reach both subscribers.
const deadline = Date.now() + 30_000;
while ((delivered[0] < sent || delivered[1] < sent) && Date.now() < deadline) await sleep(50);
stopSubscribers.abort();
await Promise.all(subscribers);
for (const m of members) {
  await m.client.stop();
  await m.db.close();
}
const result: LoadResult = {
  sentInWindow: end.sent - start.sent,
  deliveredInWindow: [
    (end.delivered[0] as number) - (start.delivered[0] as number),
    (end.delivered[1] as number) - (start.delivered[1] as number),
  ],
  totalSent: sent,
  totalDelivered: delivered,
  failedSends,
};
parentPort?.postMessage({ type: "result", result });
