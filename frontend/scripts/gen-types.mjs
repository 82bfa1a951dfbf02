// Regenerates src/api/schema.ts from the server's OpenAPI schema: dumps it with the project's Python
// (scripts/dump_openapi.py) and runs openapi-typescript on it, with every enum also exported as an array
// (`taskStateValues`, `terminalStateValues`, ...), so the UI takes state lists from the server's schema.
// Run after changing flow/model.py or the API; `--check` fails when the committed file is out of date.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const venvPy = join(repo, ".venv", "bin", "python");
const python = process.env.PYTHON ?? (existsSync(venvPy) ? venvPy : "python3");
const check = process.argv.includes("--check");

const schema = execFileSync(python, [join(here, "dump_openapi.py")], { cwd: repo, encoding: "utf8" });
const dir = mkdtempSync(join(tmpdir(), "celery-flow-openapi-"));
const file = join(dir, "openapi.json");
writeFileSync(file, schema);
try {
  const out = join(here, "..", "src", "api", "schema.ts");
  const args = [file, "--enum-values", "-o", out, ...(check ? ["--check"] : [])];
  execFileSync(join(here, "..", "node_modules", ".bin", "openapi-typescript"), args, { stdio: "inherit" });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
