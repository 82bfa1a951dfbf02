// ESLint for the UI: typescript-eslint's type-aware recommended rules, React's hooks rules
// (rules-of-hooks, exhaustive-deps and the render-purity rules) and the layering
// views -> graph -> components -> api. `npm run lint` allows no warning.
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

/** Forbid imports of the layers above `layer`. */
const below = (layer, above) => ({
  files: [`src/${layer}/**/*.{ts,tsx}`],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        patterns: above.map((dir) => ({
          group: [`**/${dir}/*`],
          message: `${layer}/ may not import from ${dir}/ (layers: views -> graph -> components -> api)`,
        })),
      },
    ],
  },
});

export default defineConfig(
  { ignores: ["node_modules/", "src/api/schema.ts"] },
  {
    files: ["src/**/*.{ts,tsx}"],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked, reactHooks.configs.flat.recommended],
    languageOptions: {
      globals: globals.browser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
  },
  below("graph", ["views"]),
  below("components", ["views", "graph"]),
  below("api", ["views", "graph", "components"]),
  {
    files: ["*.{js,mjs,ts}", "scripts/**/*.mjs"],
    extends: [js.configs.recommended],
    languageOptions: { globals: globals.node },
  },
);
