import { QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { createQueryClient } from "./api/queries";
import { App } from "./App";
import { LayoutProvider } from "./graph/layout";
import { LiveProvider } from "./live";
import { AppRouter } from "./router";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <QueryClientProvider client={createQueryClient()}>
      <AppRouter>
        <LiveProvider>
          <LayoutProvider>
            <App />
          </LayoutProvider>
        </LiveProvider>
      </AppRouter>
    </QueryClientProvider>
  </StrictMode>,
);
