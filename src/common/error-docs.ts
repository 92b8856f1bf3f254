import { Code } from "@connectrpc/connect";
import { ERROR_DEFINITIONS } from "./error-codes.ts";

/** gRPC status names as operators see them (Connect's Code enum has camel case names). */
function grpcName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** docs/errors.md, generated from the registry so the operator guide never drifts from the code. */
export function renderErrorDocs(): string {
  const lines = [
    "# Error codes",
    "",
    "Generated from `src/common/error-codes.ts` by `npm run docs:errors`; do not edit by hand.",
    "Every error carries `{code, message, retryable, metadata}`; the CLI prints it with its remedy and exits",
    "`2` for usage/config errors, `3` for safety refusals and `1` otherwise. Codes follow Canton's ids where Canton has one.",
    "",
    "| code | gRPC status | retryable | category | meaning | remedy |",
    "|---|---|---|---|---|---|",
  ];
  for (const d of ERROR_DEFINITIONS) {
    const cell = (s: string) => s.replace(/\|/g, "\\|");
    lines.push(
      `| \`${d.code}\` | ${grpcName(d.grpc)} | ${d.retryable ? "yes" : "no"} | ${d.category} | ${cell(d.message)} | ${cell(d.remedy)} |`,
    );
  }
  return `${lines.join("\n")}\n`;
}
