import { useQuery } from "@tanstack/react-query";
import { useId, useState, type ReactNode } from "react";
import { ApiError } from "../api/client";
import { registryQuery } from "../api/queries";
import { TASK_STATES } from "../api/types";
import { stateWords } from "../format";

/** What free-text search finds, said where a search can be typed. */
export const SEARCH_HINT = 'ids, names, words in arguments, results and errors, or key:value (city:"New York")';

export function StateChip({ state, title }: { state: string; title?: string }) {
  return (
    <span className={`chip st-${state}`} title={title ?? state} data-state={state}>
      {state}
    </span>
  );
}

/** A thin stacked bar of counts by state plus the non-zero counts as text (readable without colour). */
export function CountsBar({
  counts,
  total,
  picked,
  onPick,
}: {
  counts: Record<string, number>;
  total?: number;
  /** With onPick, each count is a toggle button (e.g. to highlight the failed tasks of a flow). */
  picked?: string | null;
  onPick?: (state: string | null) => void;
}) {
  const sum = total ?? Object.values(counts).reduce((a, b) => a + b, 0);
  const order = TASK_STATES.filter((s) => (counts[s] ?? 0) > 0);
  const extra = Object.keys(counts).filter((s) => !TASK_STATES.includes(s as never) && counts[s] > 0);
  const all = [...order, ...extra];
  return (
    <div className="counts">
      <div className="countsbar" aria-hidden="true">
        {all.map((s) => (
          <span key={s} className={`seg st-${s}`} style={{ flexGrow: counts[s] }} />
        ))}
        {sum === 0 && <span className="seg empty" style={{ flexGrow: 1 }} />}
      </div>
      <div className="countstext">
        {all.map((s) =>
          onPick ? (
            <button
              key={s}
              type="button"
              className={`count countbtn st-${s}`}
              aria-pressed={picked === s}
              title={picked === s ? "Show all tasks again" : `Highlight the ${counts[s]} tasks: ${stateWords(s)}`}
              onClick={() => onPick(picked === s ? null : s)}
              data-testid={`pick-${s}`}
            >
              <span className="dot" />
              {counts[s]} <span className="countlabel">{stateWords(s)}</span>
            </button>
          ) : (
            <span key={s} className={`count st-${s}`} title={`${counts[s]} ${s}`} data-count={s}>
              <span className="dot" />
              {counts[s]} <span className="countlabel">{stateWords(s)}</span>
            </span>
          ),
        )}
      </div>
    </div>
  );
}

/** Running far longer than its name's history says it should. */
export function StuckBadge() {
  return (
    <span
      className="badge stuck"
      title="Running far longer than this task's own history (above 5 × its p99, or the server's --stuck-after)"
      data-testid="stuck-badge"
    >
      stuck
    </span>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [done, setDone] = useState<"" | "ok" | "fail">("");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone("ok");
    } catch {
      // Clipboard API needs a secure context; fall back to a hidden textarea.
      const ta = document.createElement("textarea");
      ta.value = text;
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      const ok = document.execCommand("copy");
      ta.remove();
      setDone(ok ? "ok" : "fail");
    }
    window.setTimeout(() => setDone(""), 1500);
  };
  return (
    <button type="button" className="btn small" onClick={() => void copy()} aria-live="polite">
      {done === "ok" ? "Copied" : done === "fail" ? "Copy failed" : label}
    </button>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="loading" role="status">
      <span className="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function ErrorBox({ error, what }: { error: Error; what?: string }) {
  const notFound = error instanceof ApiError && error.status === 404;
  return (
    <div className={`errorbox ${notFound ? "notfound" : ""}`} role="alert">
      <strong>{notFound ? `${what ?? "This"} was not found.` : `Could not load ${what ?? "this view"}.`}</strong>
      <div className="muted">{error.message}</div>
      {notFound && (
        <div className="muted">
          It may not have been recorded yet, or it has been swept by retention (CELERY_FLOW_TTL).
        </div>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

export function Mono({ children, title }: { children: ReactNode; title?: string }) {
  return (
    <code className="mono" title={title}>
      {children}
    </code>
  );
}

/**
 * Newer/Older buttons over a cursor-paged list. It remembers the cursors it came through, so "Newer" goes
 * back one page; give it a `key` that changes with the list's filters to start over.
 */
export function Pager({
  cursor,
  next,
  go,
}: {
  cursor: string;
  next: string | null | undefined;
  go: (cursor: string) => void;
}) {
  const [prev, setPrev] = useState<string[]>([]);
  return (
    <div className="pager">
      <button
        type="button"
        className="btn"
        disabled={!cursor}
        onClick={() => {
          const p = [...prev];
          const c = p.pop() ?? "";
          setPrev(p);
          go(c);
        }}
      >
        ← Newer
      </button>
      <button
        type="button"
        className="btn"
        disabled={!next}
        onClick={() => {
          setPrev([...prev, cursor]);
          go(next ?? "");
        }}
      >
        Older →
      </button>
    </div>
  );
}

/** A task-name filter field, suggesting the names the registry knows. */
export function TaskNameField({
  value,
  onChange,
  testId,
}: {
  value: string;
  onChange: (name: string) => void;
  testId?: string;
}) {
  const names = useQuery(registryQuery());
  const listId = useId();
  return (
    <label>
      <span>Task name</span>
      <input
        value={value}
        onChange={(e) => onChange(e.target.value)}
        placeholder="proj.tasks.add"
        list={listId}
        data-testid={testId}
      />
      <datalist id={listId}>
        {(names.data ?? []).map((r) => (
          <option key={r.name} value={r.name} />
        ))}
      </datalist>
    </label>
  );
}

/** A state filter: any, or one of `states` (the generated enums' order). */
export function StateField({
  value,
  states,
  onChange,
  testId,
}: {
  value: string;
  states: readonly string[];
  onChange: (state: string) => void;
  testId?: string;
}) {
  return (
    <label>
      <span>State</span>
      <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
        <option value="">Any</option>
        {states.map((s) => (
          <option key={s} value={s}>
            {s}
          </option>
        ))}
      </select>
    </label>
  );
}
