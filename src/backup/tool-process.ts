import type { spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** Running pg_dump / pg_restore as children: their stderr, exit, stdin and what is safe to print. */

/** The tail of a child's stderr, for error messages (never its whole output in memory). */
export class StderrTail {
  private text = "";
  push(chunk: Buffer | string): void {
    this.text = (this.text + chunk.toString()).slice(-4000);
  }
  toString(): string {
    return this.text.trim();
  }
}

export function exitPromise(
  child: ReturnType<typeof spawn>,
  stderr: StderrTail,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  child.stderr?.on("data", (d: Buffer) => stderr.push(d));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
}

/** Keeps a password out of what we print: postgres://user:secret@… → postgres://user@…. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1@");
}

/** Pipes `input` into the child's stdin; the error that stopped it, if any. */
export async function feed(input: Readable, child: ReturnType<typeof spawn>): Promise<unknown> {
  try {
    await pipeline(input, child.stdin as NodeJS.WritableStream);
    return null;
  } catch (error) {
    return error;
  }
}

/** The child closed its stdin (it read what it needed, or failed: its exit code says which). */
export function isBrokenPipe(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "EPIPE" || code === "ERR_STREAM_PREMATURE_CLOSE";
}
