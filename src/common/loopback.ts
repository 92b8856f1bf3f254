import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/** The embedded PostgreSQL's address, and a node's `host` unless the config names another. */
export const LOOPBACK = "127.0.0.1";

/** The lowest port freePort hands out: above the registered services most hosts run. */
const PICK_FLOOR = 10_000;
/** Ports this process handed out already: not given twice, even once they are free again. */
const handedOut = new Set<number>();

/**
 * The kernel's ephemeral range (Linux; its default elsewhere). Outgoing connections take their local
 * port from it, so a port found free there can be taken by any client a moment later, before the node
 * it was meant for binds it: picks come from below it.
 */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    if (Number(low) > 0 && Number(high) >= Number(low)) return [Number(low), Number(high)];
  } catch {
    // not Linux
  }
  return [32_768, 60_999];
}

/**
 * A port that was free a moment ago on the loopback, for a node or cluster to bind next: chosen at
 * random below the ephemeral range (so neither an outgoing connection nor another process's
 * `listen(0)` takes it meanwhile) and never twice by one process. Two processes picking the same port
 * at once stays possible but rare (1 in a few thousand per pair of picks).
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  const ceiling = low - 1;
  if (ceiling - PICK_FLOOR < 1000) return kernelPort();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = PICK_FLOOR + randomInt(ceiling - PICK_FLOOR + 1);
    if (handedOut.has(port)) continue;
    if (await portIsFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  return kernelPort();
}

/** A port the kernel picks from its ephemeral range (the fallback when no other range is left). */
function kernelPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** True when the port can be listened on at the loopback right now. */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.unref();
    server.once("error", () => resolvePort(false));
    server.listen(port, LOOPBACK, () => server.close(() => resolvePort(true)));
  });
}
