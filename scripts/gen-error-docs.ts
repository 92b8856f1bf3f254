import { writeFileSync } from "node:fs";
import { renderErrorDocs } from "../src/common/error-docs.ts";

writeFileSync(new URL("../docs/errors.md", import.meta.url), renderErrorDocs());
