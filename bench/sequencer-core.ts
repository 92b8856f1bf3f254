/**
 * The second half of bench/sequencer.ts: the same sequencer driven in-process (no RPC), so that
 * the cost of the sequencer itself (verify, sign each view, durable group commit, read back for
 * two subscribers) shows apart from the Connect/HTTP/2 stack.
 */
import type { SequencedEvent } from "../src/common/sequenced-event.ts";
import { signedTopologyToParts } from "../src/crypto/topology.ts";
import type { SendRequestFields, Sequencer, SubscribeRequestFields } from "../src/sequencer/sequencer.ts";
import { TestMember } from "../test/support/sequencer-harness.ts";

export interface CoreResult {
  seconds: number;
  deliveredToBoth: number;
  batches: number;
  events: number;
  complete: boolean;
}

export async function runCoreLoad(
  sequencer: Sequencer,
  options: { seconds: number; warmupSeconds: number; senders: number },
): Promise<CoreResult> {
  const members = [new TestMember("core-a"), new TestMember("core-b")] as const;
  for (const m of members) await sequencer.registerMember(signedTopologyToParts(m.memberKeysTransaction()));
  const recipients = members.map((m) => m.id);
  const delivered: [number, number] = [0, 0];
  const stop = new AbortController();
  const subscribers = members.map(async (m, i) => {
    const request = m.subscribeRequest() as SubscribeRequestFields;
    const count = (events: SequencedEvent[]) => events.filter((e) => e.messageId.startsWith("core-")).length;
    try {
      for await (const events of sequencer.subscribe(request, stop.signal))
        delivered[i as 0 | 1] += count(events);
    } catch (error) {
      if (!stop.signal.aborted) throw error;
    }
  });
  let sending = true;
  let sent = 0;
  let n = 0;
  const senders = Array.from({ length: options.senders }, async (_, i) => {
    const member = members[i % 2] as TestMember;
    while (sending) {
      await sequencer.send(member.sendRequest({ recipients, messageId: `core-${n++}` }) as SendRequestFields);
      sent++;
    }
  });
  const sleep = (s: number) => new Promise((resolve) => setTimeout(resolve, s * 1000));
  await sleep(options.warmupSeconds);
  const start = { at: performance.now(), delivered: Math.min(...delivered), ...sequencer.writerStats };
  await sleep(options.seconds);
  const end = { at: performance.now(), delivered: Math.min(...delivered), ...sequencer.writerStats };
  sending = false;
  await Promise.all(senders);
  const deadline = Date.now() + 30_000;
  while (delivered.some((d) => d < sent) && Date.now() < deadline) await sleep(0.05);
  stop.abort();
  await Promise.all(subscribers);
  return {
    seconds: (end.at - start.at) / 1000,
    deliveredToBoth: end.delivered - start.delivered,
    batches: end.batches - start.batches,
    events: end.events - start.events,
    complete: delivered.every((d) => d === sent),
  };
}
