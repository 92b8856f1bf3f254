/**
 * What pgBackRest reports, typed: `info --output=json` (the backup chain and the archived WAL range)
 * and `verify --output=text --verbose` (which backups and WAL segments are intact). Pure parsing, so
 * the unit tests feed it the tool's real output.
 *
 * Shapes as pgBackRest 2.45 prints them. `info` lists backups oldest first; a `diff`/`incr` names the
 * backup it was taken against (`prior`) and every backup whose files it reuses (`reference`). With
 * `--set=<label>` the one backup also carries its database list (`database-ref`). `verify` exits 0 even
 * when it finds damage, so its text is the only verdict.
 */
import { z } from "zod";
import { LockstepError } from "../../common/errors.ts";

export type PgBackRestBackupType = "full" | "diff" | "incr";

export interface PgBackRestBackup {
  /** e.g. `20261203-050225F`, or `20261203-050225F_20261203-050228I` for an incremental. */
  label: string;
  type: PgBackRestBackupType;
  /** The backup this one was taken against (diff/incr); undefined for a full. */
  prior?: string;
  /** Every backup whose files this one reuses; empty for a full. */
  references: string[];
  /** WAL positions at the start and stop of the backup, as PostgreSQL prints LSNs (`0/5000028`). */
  lsn: { start: string; stop: string };
  /** The WAL segments a restore of this backup needs at least, first and last. */
  wal: { start: string; stop: string };
  startedAt: Date;
  stoppedAt: Date;
  /** The cluster's databases at the backup; only when asked for one set (`info --set`). */
  databases?: { name: string; oid: number }[];
  /** Bytes: the cluster, what this backup copied, and both as stored (compressed) in the repository. */
  size: { database: number; delta: number; repository: number; repositoryDelta: number };
  /** pgBackRest found checksum errors in the cluster's pages while copying. */
  pageErrors: boolean;
}

export interface PgBackRestArchiveRange {
  /** e.g. `15-1`: the PostgreSQL version and pgBackRest's id of the cluster's history. */
  id: string;
  /** First and last WAL segment in the repository; undefined when none was archived yet. */
  min?: string;
  max?: string;
}

export interface PgBackRestStanzaInfo {
  stanza: string;
  /** pgBackRest's status: 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza data, … */
  status: { code: number; message: string };
  backups: PgBackRestBackup[];
  archive: PgBackRestArchiveRange[];
  /** A backup of this stanza is running right now. */
  backupRunning: boolean;
}

const lsn = z.object({ start: z.string(), stop: z.string() });
const backupSchema = z.object({
  label: z.string(),
  type: z.enum(["full", "diff", "incr"]),
  prior: z.string().nullish(),
  reference: z.array(z.string()).nullish(),
  lsn,
  archive: lsn,
  timestamp: z.object({ start: z.number(), stop: z.number() }),
  "database-ref": z.array(z.object({ name: z.string(), oid: z.number() })).nullish(),
  error: z.boolean().optional(),
  info: z.object({
    size: z.number(),
    delta: z.number(),
    repository: z.object({ size: z.number(), delta: z.number() }),
  }),
});
const stanzaSchema = z.object({
  name: z.string(),
  status: z.object({
    code: z.number(),
    message: z.string(),
    lock: z.object({ backup: z.object({ held: z.boolean() }) }).optional(),
  }),
  backup: z.array(backupSchema).default([]),
  archive: z
    .array(z.object({ id: z.string(), min: z.string().nullish(), max: z.string().nullish() }))
    .default([]),
});

function unexpected(what: string, details: string): LockstepError {
  return new LockstepError("PGBACKREST_FAILED", {
    command: what,
    exitCode: 0,
    reason: `unexpected output: ${details}`,
    logPath: "pgBackRest's log-path",
  });
}

/** `info --output=json` for one stanza (the tool prints an array of stanzas). */
export function parseInfo(json: string, stanza: string): PgBackRestStanzaInfo {
  let raw: unknown;
  try {
    // The cluster's system-id exceeds 2^53 and loses precision here; nothing below uses it.
    raw = JSON.parse(json);
  } catch (error) {
    throw unexpected("info", `not JSON (${(error as Error).message}): ${json.slice(0, 200)}`);
  }
  const list = z.array(z.unknown()).safeParse(raw);
  if (!list.success) throw unexpected("info", "not a list of stanzas");
  const entry = list.data.find((s) => (s as { name?: unknown } | null)?.name === stanza);
  if (entry === undefined) throw unexpected("info", `stanza ${stanza} is not in the output`);
  const parsed = stanzaSchema.safeParse(entry);
  if (!parsed.success) throw unexpected("info", z.prettifyError(parsed.error));
  const s = parsed.data;
  return {
    stanza: s.name,
    status: { code: s.status.code, message: s.status.message },
    backupRunning: s.status.lock?.backup.held ?? false,
    archive: s.archive.map((a) => ({ id: a.id, min: a.min ?? undefined, max: a.max ?? undefined })),
    backups: s.backup.map((b) => ({
      label: b.label,
      type: b.type,
      prior: b.prior ?? undefined,
      references: b.reference ?? [],
      lsn: b.lsn,
      wal: b.archive,
      startedAt: new Date(b.timestamp.start * 1000),
      stoppedAt: new Date(b.timestamp.stop * 1000),
      databases: b["database-ref"] ?? undefined,
      size: {
        database: b.info.size,
        delta: b.info.delta,
        repository: b.info.repository.size,
        repositoryDelta: b.info.repository.delta,
      },
      pageErrors: b.error ?? false,
    })),
  };
}

/** An LSN (`16/B374D848`) as a number of bytes, to compare positions. */
export function lsnToBigInt(position: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(position);
  if (!m) throw new TypeError(`not an LSN: ${position}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** verify's counts for one archive id or one backup. */
export interface VerifyCounts {
  checked: number;
  valid: number;
  missing: number;
  checksumInvalid: number;
  sizeInvalid: number;
  other: number;
}

export interface VerifyReport {
  /** Nothing damaged or missing. */
  ok: boolean;
  /** pgBackRest's overall status (`ok` or `error`). */
  status: string;
  archives: ({ id: string } & VerifyCounts)[];
  /** Each backup's status: `valid`, `invalid`, or e.g. `manifest missing`. */
  backups: ({ label: string; status: string } & VerifyCounts)[];
  /** The tool's own words about each damaged file (e.g. `invalid checksum '<label>/pg_data/…'`). */
  problems: string[];
  /** The whole summary as printed. */
  text: string;
}

/** Counts before verify's counts line (printed only with --verbose) says otherwise. */
function noDamage(checked: number, valid: number): VerifyCounts {
  return { checked, valid, missing: 0, checksumInvalid: 0, sizeInvalid: 0, other: 0 };
}

const LOG_LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} P(\d+) +([A-Z]+): (.*)$/;
const ARCHIVE_LINE = /^ {2}archiveId: (\S+), total WAL checked: (\d+), total valid WAL: (\d+)$/;
const BACKUP_LINE =
  /^ {2}backup: (\S+), status: ([^,]+), total files checked: (\d+), total valid files: (\d+)$/;
const COUNTS_LINE = /^ {4}missing: (\d+), checksum invalid: (\d+), size invalid: (\d+), other: (\d+)$/;

/**
 * `verify --output=text --verbose`, run with `--log-level-console=info`: stdout interleaves the log
 * (timestamped; its multi-line entries continue on deeply indented lines) with the text summary (not
 * timestamped, indented by 0, 2 or 4). The per-file findings are INFO lines of the worker processes
 * (P01, P02, …); warnings and errors of any process count as findings too.
 */
export function parseVerify(stdout: string): VerifyReport {
  const report: VerifyReport = { ok: false, status: "", archives: [], backups: [], problems: [], text: "" };
  const summary: string[] = [];
  let last: VerifyCounts | undefined;
  for (const line of stdout.split("\n")) {
    const log = LOG_LINE.exec(line);
    if (log) {
      const [, process, level, message] = log as unknown as [string, string, string, string];
      if (level !== "INFO" || process !== "00") report.problems.push(message);
      continue;
    }
    if (/^ {5,}/.test(line) || line.trim() === "") continue; // a log entry's continuation
    summary.push(line);
    const status = /^status: (.+)$/.exec(line);
    const archive = ARCHIVE_LINE.exec(line);
    const backup = BACKUP_LINE.exec(line);
    const counts = COUNTS_LINE.exec(line);
    if (status) report.status = status[1]!.trim();
    else if (archive) {
      const entry = { id: archive[1]!, ...noDamage(Number(archive[2]), Number(archive[3])) };
      report.archives.push(entry);
      last = entry;
    } else if (backup) {
      const entry = {
        label: backup[1]!,
        status: backup[2]!.trim(),
        ...noDamage(Number(backup[3]), Number(backup[4])),
      };
      report.backups.push(entry);
      last = entry;
    } else if (counts && last) {
      // The counts line after an archive or backup line (the same object as in the report).
      last.missing = Number(counts[1]);
      last.checksumInvalid = Number(counts[2]);
      last.sizeInvalid = Number(counts[3]);
      last.other = Number(counts[4]);
    }
  }
  report.text = summary.join("\n");
  if (report.status === "") throw unexpected("verify", `no status in: ${stdout.slice(-500)}`);
  report.ok =
    report.status === "ok" &&
    report.problems.length === 0 &&
    report.backups.every((b) => b.status === "valid") &&
    [...report.archives, ...report.backups].every((c) => c.valid === c.checked);
  return report;
}
