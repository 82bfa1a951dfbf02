// Vite empties the output directory; the repository keeps it alive with a committed .gitkeep.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

writeFileSync(fileURLToPath(new URL("../../src/celery_flow/web/static/.gitkeep", import.meta.url)), "");
