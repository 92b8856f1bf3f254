import { randomBytes, randomUUID } from "node:crypto";

/** A fresh random id, e.g. for incarnations and submissions. */
export function newId(): string {
  return randomUUID();
}

/** Short random hex, for names that people read (backup set ids append it to a timestamp). */
export function shortId(bytes = 4): string {
  return randomBytes(bytes).toString("hex");
}

/**
 * Canton-style unique identifiers: `name::namespace` where the namespace is the fingerprint
 * of the owner's namespace key. Parties and members both use this form.
 */
export function uniqueIdentifier(name: string, namespace: string): string {
  return `${name}::${namespace}`;
}

export function parseUniqueIdentifier(uid: string): { name: string; namespace: string } {
  const at = uid.indexOf("::");
  if (at <= 0 || at === uid.length - 2) throw new TypeError(`"${uid}" is not of the form name::namespace`);
  return { name: uid.slice(0, at), namespace: uid.slice(at + 2) };
}

/** Valid node and party names: what fits a PostgreSQL database name and a file name. */
export const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,47}$/;
