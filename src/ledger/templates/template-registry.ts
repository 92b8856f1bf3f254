import type { ZodType } from "zod";
import { z } from "zod";
import { LockstepError } from "../../common/errors.ts";
import type { ActiveContract } from "../contract.ts";
import { type LedgerRecord, type LedgerValue, partySet } from "../ledger-value.ts";

/**
 * A small stand-in for Daml packages (docs/design.md §2 "Transactions"): templates written in TypeScript.
 * Everything here must be pure and deterministic, since every informee participant re-runs it to
 * validate a transaction and must reach the same bytes.
 */

/** A contract as a choice sees it: the template's own argument type. */
export type TypedContract<A extends LedgerRecord> = Omit<ActiveContract, "arguments"> & {
  readonly arguments: A;
};

/** What a choice body does, in order: create contracts, exercise choices on other contracts. */
export type ChoiceAction =
  | { readonly kind: "create"; readonly template: string; readonly arguments: LedgerValue }
  | {
      readonly kind: "exercise";
      readonly contractId: string;
      readonly choice: string;
      readonly argument: LedgerValue;
    };

export interface Choice<A extends LedgerRecord = LedgerRecord, C extends LedgerValue = LedgerValue> {
  readonly name: string;
  /** A consuming choice archives the contract it is exercised on. */
  readonly consuming: boolean;
  /** Validates and normalizes the choice argument; its output is the canonical argument. */
  readonly argument: ZodType<C>;
  /** The parties that must authorize the exercise. */
  controllers(argument: C, contract: TypedContract<A>): readonly string[];
  body(argument: C, contract: TypedContract<A>): readonly ChoiceAction[];
}

export interface Template<A extends LedgerRecord = LedgerRecord> {
  readonly name: string;
  /**
   * Validates and normalizes create arguments; its output is the canonical arguments. Must be
   * idempotent (parsing its output gives the output back): validators re-parse input contracts.
   */
  readonly arguments: ZodType<A>;
  signatories(args: A): readonly string[];
  observers(args: A): readonly string[];
  readonly choices: { readonly [name: string]: Choice<A> };
}

/**
 * Keeps the template's argument type inside its own definition. The registry holds templates with
 * erased argument types; that is sound because every argument reaching these functions went
 * through the template's own `arguments` schema first.
 */
export function defineTemplate<S extends ZodType<LedgerRecord>>(
  template: Template<z.output<S>> & { readonly arguments: S },
): Template {
  return template as unknown as Template;
}

/**
 * Keeps a choice's argument type inside its definition; see defineTemplate. The type comes from
 * the argument schema (S), so the body and controllers see the parsed argument's type. TypeScript
 * cannot infer the contract parameter from the enclosing template: annotate it (TypedContract<…>).
 */
export function defineChoice<A extends LedgerRecord, S extends ZodType<LedgerValue>>(
  choice: Choice<A, z.output<S>> & { readonly argument: S },
): Choice<A> {
  return choice as unknown as Choice<A>;
}

/** Canton-style party ids: `name::namespace`. */
export const partySchema = z.string().regex(/^[^\s:]+::[^\s:]+$/, "a party id of the form name::namespace");

export class TemplateRegistry {
  readonly #templates: ReadonlyMap<string, Template>;

  constructor(templates: Iterable<Template>) {
    const map = new Map<string, Template>();
    for (const t of templates) {
      if (map.has(t.name)) throw new TypeError(`template ${t.name} is defined twice`);
      map.set(t.name, t);
    }
    this.#templates = map;
  }

  names(): string[] {
    return [...this.#templates.keys()].sort();
  }

  get(name: string): Template | undefined {
    return this.#templates.get(name);
  }

  /** The template, or TEMPLATES_OR_INTERFACES_NOT_FOUND. */
  template(name: string): Template {
    const t = this.#templates.get(name);
    if (!t)
      throw new LockstepError("TEMPLATES_OR_INTERFACES_NOT_FOUND", {
        template: name,
        known: this.names().join(","),
      });
    return t;
  }
}

/** A contract's signatories and observers: sorted, observers without the signatories. */
export function contractParties(
  template: Template,
  args: LedgerRecord,
): { signatories: string[]; observers: string[] } {
  const signatories = partySet(template.signatories(args));
  const observers = partySet(template.observers(args)).filter((p) => !signatories.includes(p));
  return { signatories, observers };
}

/** Canonical create arguments, or COMMAND_PREPROCESSING_FAILED naming what is wrong. */
export function parseTemplateArguments(template: Template, raw: unknown): LedgerRecord {
  const parsed = template.arguments.safeParse(raw);
  if (!parsed.success) {
    throw new LockstepError("COMMAND_PREPROCESSING_FAILED", {
      template: template.name,
      details: issuesText(parsed.error),
    });
  }
  return parsed.data;
}

/** The choice, or COMMAND_PREPROCESSING_FAILED (Canton reports an unknown choice the same way). */
export function findChoice(template: Template, name: string): Choice {
  const choice = Object.hasOwn(template.choices, name) ? template.choices[name] : undefined;
  if (!choice) {
    throw new LockstepError("COMMAND_PREPROCESSING_FAILED", {
      template: template.name,
      details: `unknown choice ${name} (known: ${Object.keys(template.choices).sort().join(", ")})`,
    });
  }
  return choice;
}

/** The canonical choice argument, or COMMAND_PREPROCESSING_FAILED. */
export function parseChoiceArgument(template: Template, choice: Choice, raw: unknown): LedgerValue {
  const parsed = choice.argument.safeParse(raw);
  if (!parsed.success) {
    throw new LockstepError("COMMAND_PREPROCESSING_FAILED", {
      template: template.name,
      details: `argument of choice ${choice.name}: ${issuesText(parsed.error)}`,
    });
  }
  return parsed.data;
}

/** Zod issues on one line: "amount: the amount must be positive; owner: …". */
export function issuesText(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join(".") || "(value)"}: ${i.message}`).join("; ");
}
