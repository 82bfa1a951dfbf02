import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The SPA is served under whatever prefix the server is mounted at: relative asset URLs (base './')
// plus a `<base href>` the server rewrites (see DESIGN.md, SPA mounting contract).
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "../src/celery_flow/web/static",
    // Emptied on every build so stale hashed assets never ship; scripts/keep-gitkeep.mjs puts back
    // the committed .gitkeep afterwards.
    emptyOutDir: true,
    chunkSizeWarningLimit: 2500,
    target: "es2022",
  },
  worker: { format: "es" },
  server: {
    proxy: {
      "/api": { target: process.env.CELERY_FLOW_DEV_API ?? "http://127.0.0.1:8000", ws: true },
    },
  },
});
