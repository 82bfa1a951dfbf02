// The colour theme lives on <html data-theme>: index.html sets it before first paint (the stored choice,
// else the system's), the toggle changes it and remembers it, and components read it from there.
import { useSyncExternalStore } from "react";

export type Theme = "dark" | "light";

const STORAGE_KEY = "celery-flow-theme";

function read(): Theme {
  return document.documentElement.dataset.theme === "light" ? "light" : "dark";
}

function subscribe(onChange: () => void): () => void {
  const mo = new MutationObserver(onChange);
  mo.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
  return () => mo.disconnect();
}

/** Show `theme` now and on the next visits; call from an event handler. */
export function setTheme(theme: Theme): void {
  document.documentElement.dataset.theme = theme;
  try {
    localStorage.setItem(STORAGE_KEY, theme);
  } catch {
    /* private mode: the choice lasts for this page only */
  }
}

/** The current theme, following every change of <html data-theme>. */
export function useTheme(): Theme {
  return useSyncExternalStore(subscribe, read);
}
