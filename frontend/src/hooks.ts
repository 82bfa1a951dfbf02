import { useEffect, useState } from "react";

/** Re-render every `ms` so relative times ("3 s ago") and running durations stay true. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now() / 1000);
  useEffect(() => {
    const t = window.setInterval(() => setNow(Date.now() / 1000), ms);
    return () => window.clearInterval(t);
  }, [ms]);
  return now;
}

export function useDocumentTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · celery-flow` : "celery-flow";
  }, [title]);
}
