import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ERROR_DEFINITIONS } from "../../src/common/error-codes.ts";
import { renderErrorDocs } from "../../src/common/error-docs.ts";

test("docs/errors.md matches the error registry (run npm run docs:errors)", () => {
  const docs = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  assert.equal(docs, renderErrorDocs());
});

test("error codes are unique and name a remedy", () => {
  const codes = ERROR_DEFINITIONS.map((d) => d.code);
  assert.equal(new Set(codes).size, codes.length);
  for (const d of ERROR_DEFINITIONS) assert.ok(d.remedy.length > 10, `${d.code} has a remedy`);
});
