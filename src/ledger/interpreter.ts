import { LockstepError } from "../common/errors.ts";
import { hashFields } from "../common/hash.ts";
import { authorizationProblems } from "./authorization.ts";
import { type ActiveContract, deriveContractId } from "./contract.ts";
import { type LedgerValue, partySet } from "./ledger-value.ts";
import { builtinTemplates } from "./templates/builtin-templates.ts";
import {
  type ChoiceAction,
  contractParties,
  findChoice,
  parseChoiceArgument,
  parseTemplateArguments,
  type TemplateRegistry,
} from "./templates/template-registry.ts";
import {
  type Command,
  type CreateNode,
  type ExerciseNode,
  type SubmitterInfo,
  type Transaction,
  type TransactionNode,
  transactionConfirmingParties,
  transactionInformees,
} from "./transaction.ts";

/** What interpretation may depend on. Contracts come through `lookupContract`, keeping this pure. */
export interface InterpretationContext {
  /** Microseconds since the epoch; becomes the created contracts' `createdAt`. */
  readonly ledgerTime: bigint;
  readonly submitter: SubmitterInfo;
  /** An active contract visible to the submitter, or undefined. Must not change during a call. */
  lookupContract(contractId: string): ActiveContract | undefined;
  /** Defaults to the built-in templates; every participant of a synchronizer must use the same. */
  readonly templates?: TemplateRegistry;
}

// A choice body that exercises choices endlessly must fail, not overflow the stack.
const MAX_DEPTH = 64;

/**
 * The seed every contract id of the transaction derives from. Deterministic, so validators reach
 * the same ids; unique per submission because the submission id is.
 */
export function transactionSeed(submitter: SubmitterInfo, ledgerTime: bigint): Buffer {
  return hashFields(
    "lockstep-transaction-seed-v1",
    submitter.participant,
    submitter.userId,
    submitter.commandId,
    submitter.submissionId,
    ledgerTime.toString(),
  );
}

/**
 * Interprets one command into a transaction. Pure and deterministic: the same command and context
 * give the same transaction, byte for byte. Throws LockstepError: TEMPLATES_OR_INTERFACES_NOT_FOUND,
 * COMMAND_PREPROCESSING_FAILED (bad arguments, unknown choice), CONTRACT_NOT_FOUND,
 * CONTRACT_NOT_ACTIVE (archived earlier in the same transaction), DAML_AUTHORIZATION_ERROR,
 * DAML_INTERPRETATION_ERROR (a choice body failed).
 */
export function interpret(command: Command, context: InterpretationContext): Transaction {
  const actAs = partySet(command.actAs);
  if (actAs.length === 0) throw new LockstepError("INVALID_ARGUMENT", { details: "act-as names no party" });
  const { participant, userId, commandId, submissionId } = context.submitter;
  const run = new Interpretation(context);
  const root =
    command.kind === "create"
      ? run.create(command.template, command.arguments, true)
      : run.exercise(command.contractId, command.choice, command.argument, 0);
  const nodes: readonly TransactionNode[] = [root];
  const [problem] = authorizationProblems(nodes, actAs);
  if (problem) throw problem;
  const normalized: Command =
    root.kind === "create"
      ? { kind: "create", template: root.template, arguments: root.arguments, actAs }
      : {
          kind: "exercise",
          contractId: root.contractId,
          choice: root.choice,
          argument: root.argument,
          actAs,
        };
  return {
    version: 1,
    command: normalized,
    // Field by field: a richer submitter object must not leak extra fields into the bytes.
    submitter: { participant, userId, commandId, submissionId },
    ledgerTime: context.ledgerTime,
    nodes,
    inputContracts: [...run.inputs.values()],
    createdContracts: [...run.created.values()].filter((c) => !run.consumed.has(c.contractId)),
    archivedContracts: [...run.consumed].filter((id) => run.inputs.has(id)),
    informees: transactionInformees(nodes),
    confirmingParties: transactionConfirmingParties(nodes),
  };
}

class Interpretation {
  readonly inputs = new Map<string, ActiveContract>();
  readonly created = new Map<string, ActiveContract>();
  // In order of consumption.
  readonly consumed = new Set<string>();
  readonly #templates: TemplateRegistry;
  readonly #seed: Buffer;
  #nextNodeIndex = 0;

  constructor(readonly context: InterpretationContext) {
    this.#templates = context.templates ?? builtinTemplates;
    this.#seed = transactionSeed(context.submitter, context.ledgerTime);
  }

  create(templateName: string, rawArguments: LedgerValue, submitted: boolean): CreateNode {
    const template = this.#templates.template(templateName);
    const action = `Creating a ${template.name} contract`;
    const args = submitted
      ? parseTemplateArguments(template, rawArguments)
      : inBody(action, () => parseTemplateArguments(template, rawArguments));
    const { signatories, observers } = inBody(action, () => contractParties(template, args));
    const nodeIndex = this.#nextNodeIndex++;
    const salt = hashFields("lockstep-contract-salt-v1", this.#seed, String(nodeIndex)).toString("hex");
    const content = {
      template: template.name,
      arguments: args,
      signatories,
      observers,
      createdAt: this.context.ledgerTime,
      salt,
    };
    const contractId = deriveContractId(content);
    this.created.set(contractId, { contractId, ...content });
    return { kind: "create", contractId, template: template.name, arguments: args, signatories, observers };
  }

  exercise(contractId: string, choiceName: string, rawArgument: LedgerValue, depth: number): ExerciseNode {
    const contract = this.#lookup(contractId);
    const template = this.#templates.template(contract.template);
    const choice = findChoice(template, choiceName);
    const action = `Exercising ${choice.name} on ${template.name} contract ${contractId}`;
    if (depth >= MAX_DEPTH) {
      throw new LockstepError("DAML_INTERPRETATION_ERROR", {
        action,
        details: `nesting deeper than ${MAX_DEPTH}`,
      });
    }
    const argument =
      depth === 0
        ? parseChoiceArgument(template, choice, rawArgument)
        : inBody(action, () => parseChoiceArgument(template, choice, rawArgument));
    const actingParties = partySet(inBody(action, () => choice.controllers(argument, contract)));
    this.#nextNodeIndex++;
    // Daml consumes before running the body, so the body cannot use the contract again.
    if (choice.consuming) this.consumed.add(contractId);
    const actions: readonly ChoiceAction[] = inBody(action, () => choice.body(argument, contract));
    const children = actions.map((a) =>
      a.kind === "create"
        ? this.create(a.template, a.arguments, false)
        : this.exercise(a.contractId, a.choice, a.argument, depth + 1),
    );
    return {
      kind: "exercise",
      contractId,
      template: template.name,
      choice: choice.name,
      argument,
      actingParties,
      consuming: choice.consuming,
      signatories: contract.signatories,
      observers: contract.observers,
      children,
    };
  }

  #lookup(contractId: string): ActiveContract {
    if (this.consumed.has(contractId)) throw new LockstepError("CONTRACT_NOT_ACTIVE", { contractId });
    const local = this.created.get(contractId) ?? this.inputs.get(contractId);
    if (local) return local;
    const found = this.context.lookupContract(contractId);
    if (!found || found.contractId !== contractId)
      throw new LockstepError("CONTRACT_NOT_FOUND", { contractId });
    this.inputs.set(contractId, found);
    return found;
  }
}

/** Runs template code; anything it throws becomes DAML_INTERPRETATION_ERROR for that action. */
function inBody<T>(action: string, f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof LockstepError && error.code !== "COMMAND_PREPROCESSING_FAILED") throw error;
    const details = error instanceof Error ? error.message : String(error);
    throw new LockstepError("DAML_INTERPRETATION_ERROR", { action, details }, { cause: error });
  }
}
