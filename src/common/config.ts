import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { type Document, isNode, LineCounter, parseDocument, parse as parseYaml, stringify } from "yaml";
import { z } from "zod";
import { configNodes, configSchema, durationSchema, type LockstepConfig } from "./config-schema.ts";
import { formatDuration } from "./duration.ts";
import { LockstepError } from "./errors.ts";
import { applyTlsDefaults } from "./tls-config.ts";

export interface LoadedConfig {
  config: LockstepConfig;
  /** Absolute path of the config file. */
  path: string;
  /** The config file's directory; relative paths in the config are resolved against it. */
  baseDir: string;
  /** Problems that do not stop loading, e.g. a `LOCKSTEP_` variable that names no key. */
  warnings: string[];
}

export interface LoadConfigOptions {
  /** Default: `$LOCKSTEP_CONFIG`, else `./lockstep.yaml`. */
  path?: string;
  /** Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Applied last (after env). Keys are dotted paths (`participants.0.port`); values replace what is there. */
  overrides?: Record<string, unknown>;
}

/** One problem with the config, named by its key path (`participants.0.port`). */
export interface ConfigIssue {
  path: string;
  message: string;
  /** Where in the config file, when the problem comes from it. */
  line?: number;
  column?: number;
}

/** CONFIG_INVALID with the structured issue list; the message lists every issue. */
export class ConfigError extends LockstepError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[], file?: string) {
    super("CONFIG_INVALID", { details: issues.map(formatConfigIssue).join("; "), path: file });
    this.issues = issues;
  }
}

export function formatConfigIssue(issue: ConfigIssue): string {
  if (!issue.path && issue.line !== undefined)
    return `line ${issue.line}, column ${issue.column}: ${issue.message}`;
  const where = issue.line !== undefined ? ` (line ${issue.line})` : "";
  return `${issue.path || "(root)"}: ${issue.message}${where}`;
}

/** Environment variables that start with `LOCKSTEP_` but are not config keys. */
const NON_CONFIG_ENV = new Set(["LOCKSTEP_CONFIG", "LOCKSTEP_LOG_LEVEL", "LOCKSTEP_DEBUG"]);

type Segment = string | number;
type AnySchema = z.core.$ZodType;
type Json = Record<string, unknown>;

export async function loadConfig(options: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? process.env;
  const path = resolve(options.path ?? env.LOCKSTEP_CONFIG ?? "lockstep.yaml");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT")
      throw new LockstepError("CONFIG_NOT_FOUND", { path });
    throw new ConfigError([{ path: "", message: `cannot read ${path}: ${(error as Error).message}` }], path);
  }
  const lineCounter = new LineCounter();
  // prettyErrors off: we place errors ourselves and keep the message to one line.
  // logLevel error: its warnings are reported below (doc.warnings), not also by process.emitWarning.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, logLevel: "error" });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const { line, col } = lineCounter.linePos(e.pos[0]);
        return { path: "", message: e.message, line, column: col };
      }),
      path,
    );
  }
  let raw: unknown;
  try {
    // toJS resolves aliases: an undefined anchor, or too many aliases (yaml's maxAliasCount, a
    // "billion laughs" guard), throws a ReferenceError, which is the file's problem, not a crash.
    raw = doc.toJS() ?? {};
  } catch (error) {
    throw new ConfigError([{ path: "", message: (error as Error).message }], path);
  }
  if (!isPlainObject(raw))
    throw new ConfigError([{ path: "", message: "expected a mapping of config keys" }], path);

  const warnings = doc.warnings.map((w) => `${path}:${lineCounter.linePos(w.pos[0]).line}: ${w.message}`);
  const sources = new Map<string, string>(); // key path → env var that set it
  const issues: ConfigIssue[] = [];
  applyEnv(raw, env, { warnings, issues, sources });
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    setIn(raw, key.split(".").map(toSegment), value, issues, `override ${key}`);
  }
  if (issues.length > 0) throw new ConfigError(issues, path);

  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const found = configIssues(result.error).map((issue) => locate(issue, doc, lineCounter, sources));
    throw new ConfigError(found, path);
  }
  const baseDir = dirname(path);
  const config = result.data;
  config["data-dir"] = resolve(baseDir, config["data-dir"]);
  config.backup.repository = resolve(baseDir, config.backup.repository);
  const backupEncryption = config.backup.encryption;
  if (backupEncryption) {
    backupEncryption["key-file"] = resolve(baseDir, backupEncryption["key-file"]);
    backupEncryption["previous-key-files"] = backupEncryption["previous-key-files"].map((file) =>
      resolve(baseDir, file),
    );
  }
  const adminTokenFile = config.admin?.["token-file"];
  if (config.admin && adminTokenFile) config.admin["token-file"] = resolve(baseDir, adminTokenFile);
  for (const participant of config.participants) {
    const auth = participant["ledger-api"]?.auth;
    if (auth?.type === "hs256") auth["secret-file"] = resolve(baseDir, auth["secret-file"]);
    if (auth?.type === "jwks" && auth["jwks-file"]) auth["jwks-file"] = resolve(baseDir, auth["jwks-file"]);
  }
  for (const { config: node } of configNodes(config)) {
    const encryption = node.crypto["private-key-encryption"];
    if (!encryption) continue;
    encryption["wrapper-key-file"] = resolve(baseDir, encryption["wrapper-key-file"]);
    encryption["previous-wrapper-key-files"] = encryption["previous-wrapper-key-files"].map((file) =>
      resolve(baseDir, file),
    );
  }
  // After data-dir is absolute: `tls: auto` puts each node's certificate under it.
  applyTlsDefaults(config, baseDir);
  return { config, path, baseDir, warnings };
}

/** Validates an already-parsed config (no file, no env); throws ConfigError. Paths stay as given. */
export function validateConfig(input: unknown): LockstepConfig {
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(configIssues(result.error));
  applyTlsDefaults(result.data);
  return result.data;
}

/** zod's issues as key paths, one per unknown key, with zod's "Invalid input:" prefixes dropped. */
export function configIssues(error: z.ZodError): ConfigIssue[] {
  return error.issues.flatMap((issue): ConfigIssue[] => {
    const path = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      const known = Object.keys(objectShape(schemaAt(issue.path as Segment[])) ?? {});
      const hint = known.length > 0 ? ` (known keys: ${known.join(", ")})` : "";
      return issue.keys.map((key) => ({
        path: path ? `${path}.${key}` : key,
        message: `unknown key${hint}`,
      }));
    }
    const message = issue.message
      .replace(/^Invalid (input|option): /, "")
      .replace(/^expected (\w+), received undefined$/, "missing (expected $1)");
    return [{ path, message }];
  });
}

/** Adds where the problem comes from: the env var that set the key, else the line in the file. */
function locate(
  issue: ConfigIssue,
  doc: Document,
  lines: LineCounter,
  sources: Map<string, string>,
): ConfigIssue {
  for (const [key, variable] of sources) {
    if (issue.path === key || issue.path.startsWith(`${key}.`))
      return { ...issue, message: `${issue.message} (from ${variable})` };
  }
  const segments = issue.path === "" ? [] : issue.path.split(".").map(toSegment);
  // A missing or unknown key has no node of its own: fall back to its nearest parent in the file.
  for (let i = segments.length; i >= 1; i--) {
    const node = doc.getIn(segments.slice(0, i), true);
    if (isNode(node) && node.range) {
      const { line, col } = lines.linePos(node.range[0]);
      return { ...issue, line, column: col };
    }
  }
  return issue;
}

interface EnvContext {
  warnings: string[];
  issues: ConfigIssue[];
  sources: Map<string, string>;
}

/**
 * `LOCKSTEP_` + the key path upper-cased with `_` for both `-` and nesting. Since that is ambiguous,
 * names are matched by walking the schema's keys (and list indexes), never by splitting on `_`.
 */
function applyEnv(raw: Json, env: NodeJS.ProcessEnv, ctx: EnvContext): void {
  // Sorted so that a whole subtree (LOCKSTEP_BACKUP) applies before its keys (LOCKSTEP_BACKUP_FORMAT).
  for (const name of Object.keys(env).sort()) {
    const value = env[name];
    if (!name.startsWith("LOCKSTEP_") || value === undefined || NON_CONFIG_ENV.has(name)) continue;
    const path = matchEnvName(configSchema, name.slice("LOCKSTEP_".length));
    if (!path) {
      ctx.warnings.push(`${name} names no config key; ignored`);
      continue;
    }
    if (setIn(raw, path, envValue(schemaAt(path), value), ctx.issues, name))
      ctx.sources.set(path.join("."), name);
  }
}

function matchEnvName(schema: AnySchema | undefined, rest: string): Segment[] | undefined {
  const shape = objectShape(schema);
  if (shape) {
    for (const [key, child] of Object.entries(shape)) {
      const token = key.toUpperCase().replace(/-/g, "_");
      if (rest === token) return [key];
      if (rest.startsWith(`${token}_`)) {
        const sub = matchEnvName(child, rest.slice(token.length + 1));
        if (sub) return [key, ...sub];
      }
    }
    return undefined;
  }
  const s = schema && unwrap(schema);
  if (s instanceof z.ZodArray) {
    const m = /^(\d+)(?:_(.+))?$/.exec(rest);
    if (!m) return undefined;
    const index = Number(m[1]);
    if (m[2] === undefined) return [index];
    const sub = matchEnvName(s.element, m[2]);
    return sub && [index, ...sub];
  }
  return undefined;
}

/** Strings stay as written (so `""` and `007` survive); anything else is read as a YAML value. */
function envValue(schema: AnySchema | undefined, value: string): unknown {
  let s = schema && unwrap(schema);
  if (s instanceof z.ZodPipe) s = unwrap(s.in);
  if (s instanceof z.ZodString || s instanceof z.ZodEnum) return value;
  try {
    return parseYaml(value);
  } catch {
    return value; // the schema then reports the key with the type it expects
  }
}

/** Sets `path` in `root`, creating containers; a list index may append but not leave holes. */
function setIn(root: Json, path: Segment[], value: unknown, issues: ConfigIssue[], source: string): boolean {
  let target: unknown = root;
  for (let i = 0; i < path.length; i++) {
    const segment = path[i] as Segment;
    const container = target as Record<Segment, unknown>;
    if (Array.isArray(container) && typeof segment === "number" && segment > container.length) {
      const at = path.slice(0, i).join(".");
      issues.push({
        path: path.slice(0, i + 1).join("."),
        message: `${source} names element ${segment} but ${at} has ${container.length} elements`,
      });
      return false;
    }
    if (i === path.length - 1) {
      container[segment] = value;
      return true;
    }
    const next = path[i + 1];
    const current = container[segment];
    if (typeof next === "number" ? !Array.isArray(current) : !isPlainObject(current)) {
      container[segment] = typeof next === "number" ? [] : {};
    }
    target = container[segment];
  }
  return true;
}

/** The built-in example network of docs/cli.md, used by `lockstep demo`. */
export function exampleConfig(
  dataDir: string,
  ports: { sequencer?: number; mediator?: number; participants?: number[] } = {},
): LockstepConfig {
  const participantPorts = ports.participants ?? [4011, 4021];
  return validateConfig({
    "data-dir": resolve(dataDir),
    synchronizer: {
      id: "sync1",
      sequencer: { name: "sequencer1", port: ports.sequencer ?? 4001 },
      mediator: { name: "mediator1", port: ports.mediator ?? 4002 },
    },
    // The embedded demo runs without Ledger API auth, by explicit config (docs/security.md).
    participants: participantPorts.map((port, i) => ({
      name: `participant${i + 1}`,
      port,
      "ledger-api": { auth: { type: "off" } },
    })),
    backup: { repository: join(resolve(dataDir), "backups") },
  });
}

/** The config as `lockstep config check` prints it: defaults filled, durations canonical (`60s` → `1m`). */
export function normalizedConfigYaml(config: LockstepConfig): string {
  return stringify(writeDurations(configSchema, config), { lineWidth: 0 });
}

function writeDurations(schema: AnySchema | undefined, value: unknown): unknown {
  const s = schema && unwrap(schema);
  if (s === durationSchema && typeof value === "number") return formatDuration(value);
  if (Array.isArray(value))
    return value.map((v) => writeDurations(s instanceof z.ZodArray ? s.element : undefined, v));
  if (isPlainObject(value)) {
    const shape = objectShape(s);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, writeDurations(shape?.[k], v)]));
  }
  return value;
}

// --- walking the schema ---

/** Strips wrappers that do not change the shape (defaults, optional). */
function unwrap(schema: AnySchema): AnySchema {
  let s = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodOptional || s instanceof z.ZodNullable)
    s = s.unwrap();
  return s;
}

function objectShape(schema: AnySchema | undefined): Record<string, AnySchema> | undefined {
  const s = schema && unwrap(schema);
  return s instanceof z.ZodObject ? (s.shape as Record<string, AnySchema>) : undefined;
}

function schemaAt(path: readonly Segment[]): AnySchema | undefined {
  let s: AnySchema | undefined = configSchema;
  for (const segment of path) {
    const u: AnySchema | undefined = s && unwrap(s);
    s = u instanceof z.ZodArray ? u.element : objectShape(u)?.[String(segment)];
  }
  return s;
}

function toSegment(part: string): Segment {
  return /^\d+$/.test(part) ? Number(part) : part;
}

function isPlainObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
