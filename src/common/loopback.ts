import { createServer } from "node:net";

/** The embedded PostgreSQL's address, and a node's `host` unless the config names another. */
export const LOOPBACK = "127.0.0.1";

/** A port that was free a moment ago on the loopback (a race is possible but rare). */
export function freePort(): Promise<number> {
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
