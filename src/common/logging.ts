import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

export interface LoggerOptions {
  /** The node (or "cli") every line is tagged with. */
  node: string;
  level?: string;
  /** Where to write; defaults to stderr so that `--json` stdout stays clean. */
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? process.env.LOCKSTEP_LOG_LEVEL ?? "info";
  return pino({ level, base: { node: options.node } }, options.destination ?? pino.destination(2));
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(node = "test"): Logger {
  return pino({ level: "silent", base: { node } });
}
