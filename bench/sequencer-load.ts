/**
 * The load side of bench/sequencer.ts, in a worker thread (so that clients and the sequencer use
 * both cores): two members, each subscribed, and many concurrent senders addressing both.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createNodeClient, nodeBaseUrl } from "../src/common/rpc-client.ts";
import { SequencerService } from "../src/gen/lockstep/sequencer/v1/sequencer_pb.ts";
import { type SequencerClient, TestMember } from "../test/support/sequencer-harness.ts";

export interface LoadSettings {
  port: number;
  seconds: number;
  warmupSeconds: number;
  senders: number;
}

export interface LoadResult {
  sentInWindow: number;
  deliveredInWindow: [number, number];
  totalSent: number;
  totalDelivered: [number, number];
  failedSends: number;
}

const settings = workerData as LoadSettings;
const client: SequencerClient = createNodeClient(SequencerService, nodeBaseUrl(settings.port));
const members = [new TestMember("bench-a"), new TestMember("bench-b")] as const;
for (const m of members) await m.register(client);
const recipients = members.map((m) => m.id);

const delivered: [number, number] = [0, 0];
const stopSubscribers = new AbortController();
const subscribers = members.map(async (member, i) => {
  try {
    for await (const response of client.subscribe(member.subscribeRequest(), {
      signal: stopSubscribers.signal,
    })) {
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
  const member = members[i % 2] as TestMember;
  while (sending) {
    try {
      await client.send(member.sendRequest({ recipients, messageId: `bench-${i}-${counter++}` }));
      sent++;
    } catch {
      failedSends++;
    }
  }
});

const sleep = (s: number) => new Promise((resolve) => setTimeout(resolve, s * 1000));
await sleep(settings.warmupSeconds);
const start = { sent, delivered: [...delivered] };
parentPort?.postMessage({ type: "window-start" });
await sleep(settings.seconds);
const end = { sent, delivered: [...delivered] };
parentPort?.postMessage({ type: "window-end" });
sending = false;
await Promise.all(senders);
// Every acknowledged send must reach both subscribers.
const deadline = Date.now() + 30_000;
while ((delivered[0] < sent || delivered[1] < sent) && Date.now() < deadline) await sleep(0.05);
stopSubscribers.abort();
await Promise.all(subscribers);
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
