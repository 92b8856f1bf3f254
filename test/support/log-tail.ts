import { readFileSync } from "node:fs";

/** The last `lines` lines of a log file, or "" when it cannot be read (for failure messages). */
export function logTail(path: string, lines: number): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}
