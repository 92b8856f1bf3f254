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

/**
 * Canton's rules for a unique identifier (topology/Identifier.scala): the identifier part is at most
 * 185 characters of Daml-LF's party alphabet (letters, digits, space, `:`, `-`, `_`) without the
 * `::` delimiter; the namespace is a key fingerprint (Lockstep's: "1220" + SHA-256 hex). Why `uid`
 * breaks them, or undefined.
 */
export function uniqueIdentifierProblem(uid: string, fingerprintPattern: RegExp): string | undefined {
  const at = uid.indexOf("::");
  if (at <= 0) return "not of the form NAME::NAMESPACE";
  const name = uid.slice(0, at);
  const namespace = uid.slice(at + 2);
  if (name.length > 185) return `its name has ${name.length} characters, at most 185 allowed`;
  if (!/^[a-zA-Z0-9:\-_ ]+$/.test(name))
    return "its name may hold only letters, digits, space, ':', '-' and '_'";
  if (!fingerprintPattern.test(namespace)) return "its namespace is not a key fingerprint";
  return undefined;
}

/** Valid node and party names: what fits a PostgreSQL database name and a file name. */
export const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,47}$/;
