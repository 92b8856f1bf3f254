import { LockstepError } from "../common/errors.ts";
import { partySet } from "./ledger-value.ts";
import type { TransactionNode } from "./transaction.ts";

/**
 * Daml's authorization rule: the root actions are authorized by the submitters (act-as); the
 * consequences of an exercise are authorized by the exercised contract's signatories together with
 * the choice's controllers. A create needs all its signatories, an exercise all its controllers.
 * Returns one error per unauthorized node, in pre-order; empty when all is authorized.
 */
export function authorizationProblems(
  nodes: readonly TransactionNode[],
  actAs: readonly string[],
): LockstepError[] {
  const problems: LockstepError[] = [];
  const visit = (node: TransactionNode, authorizers: ReadonlySet<string>): void => {
    const required = node.kind === "create" ? node.signatories : node.actingParties;
    const label =
      node.kind === "create"
        ? `Creating a ${node.template} contract`
        : `Exercising ${node.choice} on ${node.template} contract ${node.contractId}`;
    if (required.length === 0) {
      problems.push(
        new LockstepError("DAML_INTERPRETATION_ERROR", {
          action: label,
          details:
            node.kind === "create" ? "the contract has no signatories" : "the choice has no controllers",
        }),
      );
    } else if (required.some((p) => !authorizers.has(p))) {
      problems.push(
        new LockstepError("DAML_AUTHORIZATION_ERROR", {
          action: label,
          required: partySet(required).join(", "),
          authorizers: [...authorizers].sort().join(", ") || "no party",
        }),
      );
    }
    if (node.kind === "exercise") {
      const inner = new Set(partySet(node.signatories, node.actingParties));
      for (const child of node.children) visit(child, inner);
    }
  };
  const roots = new Set(actAs);
  for (const node of nodes) visit(node, roots);
  return problems;
}
