import { useEffect, useState, type Dispatch, type SetStateAction } from "react";

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

/**
 * A form's draft of `value` (e.g. a list's filters from the URL): edited freely, and reset to `value`
 * whenever `value` changes (a link, back/forward, Apply).
 */
export function useDraft<T>(value: T): [T, Dispatch<SetStateAction<T>>] {
  const [draft, setDraft] = useState<T>(value);
  const key = JSON.stringify(value);
  const [draftOf, setDraftOf] = useState(key);
  if (draftOf !== key) {
    setDraftOf(key);
    setDraft(value);
  }
  return [draft, setDraft];
}
