import { LockstepError, toLockstepError } from "../common/errors.ts";
import { authorizationProblems } from "./authorization.ts";
import { type ActiveContract, contractIdMatches } from "./contract.ts";
import { interpret } from "./interpreter.ts";
import { ledgerJson } from "./ledger-value.ts";
import { builtinTemplates } from "./templates/builtin-templates.ts";
import {
  contractParties,
  parseTemplateArguments,
  type TemplateRegistry,
} from "./templates/template-registry.ts";
import type { Transaction } from "./transaction.ts";
import { transactionToJson } from "./transaction-codec.ts";

export interface ValidationContext {
  /** The sender of the sequenced confirmation request; the transaction must name it as submitter. */
  readonly submittingParticipant?: string;
  readonly templates?: TemplateRegistry;
}

export interface TransactionValidation {
  readonly ok: boolean;
  /** Why the transaction must be rejected; the first one's code goes into the rejection. */
  readonly problems: readonly LockstepError[];
}

/**
 * What an informee participant checks before confirming (Canton's model conformance and
 * authorization checks): the input contracts are authentic, the transaction is authorized, and
 * re-interpreting its command with its own input contracts gives exactly this transaction.
 * Activeness (inputs active and not locked) and the ledger time tolerance are the participant's
 * checks against its own state; see acs.ts for activeness.
 */
export function validateTransaction(tx: Transaction, context: ValidationContext = {}): TransactionValidation {
  const templates = context.templates ?? builtinTemplates;
  const problems: LockstepError[] = [];
  const add = (problem: LockstepError) => {
    if (!problems.some((p) => p.code === problem.code && p.message === problem.message))
      problems.push(problem);
  };

  if (
    context.submittingParticipant !== undefined &&
    tx.submitter.participant !== context.submittingParticipant
  ) {
    add(
      malformed(
        `the transaction names ${tx.submitter.participant} as submitter but ${context.submittingParticipant} sent it`,
      ),
    );
  }

  const inputs = new Map<string, ActiveContract>();
  for (const contract of tx.inputContracts) {
    if (inputs.has(contract.contractId))
      add(malformed(`input contract ${contract.contractId} is listed twice`));
    inputs.set(contract.contractId, contract);
    for (const problem of inputContractProblems(contract, templates)) add(problem);
  }

  for (const problem of authorizationProblems(tx.nodes, tx.command.actAs)) add(problem);

  let reinterpreted: Transaction | undefined;
  try {
    reinterpreted = interpret(tx.command, {
      ledgerTime: tx.ledgerTime,
      submitter: tx.submitter,
      lookupContract: (id) => inputs.get(id),
      templates,
    });
  } catch (error) {
    add(toLockstepError(error));
  }
  if (reinterpreted) {
    const expected = transactionToJson(reinterpreted);
    const actual = transactionToJson(tx);
    const differing = Object.keys({ ...expected, ...actual }).filter(
      (key) => ledgerJson(expected[key]) !== ledgerJson(actual[key]),
    );
    if (differing.length > 0) {
      add(
        conformance(
          `re-interpreting the command gives a different transaction (differs in ${differing.join(", ")})`,
        ),
      );
    }
  }
  return { ok: problems.length === 0, problems };
}

/** An input contract must be authenticated by its id and be a valid instance of its template. */
function inputContractProblems(contract: ActiveContract, templates: TemplateRegistry): LockstepError[] {
  const id = contract.contractId;
  if (!contractIdMatches(contract)) return [malformed(`input contract ${id} does not match its id`)];
  const template = templates.get(contract.template);
  if (!template) return [conformance(`input contract ${id} has unknown template ${contract.template}`)];
  try {
    const args = parseTemplateArguments(template, contract.arguments);
    const { signatories, observers } = contractParties(template, args);
    const same =
      ledgerJson(args) === ledgerJson(contract.arguments) &&
      ledgerJson(signatories) === ledgerJson(contract.signatories) &&
      ledgerJson(observers) === ledgerJson(contract.observers);
    return same ? [] : [conformance(`input contract ${id} is not a canonical ${template.name} contract`)];
  } catch (error) {
    return [conformance(`input contract ${id}: ${toLockstepError(error).message}`)];
  }
}

function malformed(details: string): LockstepError {
  return new LockstepError("LOCAL_VERDICT_MALFORMED_PAYLOAD", { details });
}

function conformance(details: string): LockstepError {
  return new LockstepError("LOCAL_VERDICT_FAILED_MODEL_CONFORMANCE_CHECK", { details });
}
