import { createRequire } from "node:module";

/** The package version, recorded in manifests and status. */
export const LOCKSTEP_VERSION: string = (
  createRequire(import.meta.url)("../../package.json") as { version: string }
).version;
