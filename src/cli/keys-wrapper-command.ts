import type { Command } from "commander";

// PLACEHOLDER: `lockstep keys rotate-wrapper` is being built; replaced before issue 11 is resolved.
export function registerKeysWrapperCommand(_keys: Command): void {}
