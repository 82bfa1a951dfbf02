import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { App } from "./App";
import { LiveProvider } from "./live";
import { RouterProvider } from "./router";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <RouterProvider>
      <LiveProvider>
        <App />
      </LiveProvider>
    </RouterProvider>
  </StrictMode>,
);
