import { lazy, Suspense, useEffect, useRef, useState, type FormEvent } from "react";
import { api, ApiError, clearPrefetchedFlow, prefetchFlow } from "./api/client";
import { prewarm } from "./graph/layout";
import { Loading } from "./components/common";
import { useLiveStatus } from "./live";
import { Link, useRouter, withQuery } from "./router";
import { FlowsView } from "./views/Flows";
import { NotFoundView } from "./views/NotFound";
import { RegistryView } from "./views/Registry";
import { TaskView } from "./views/Task";
import { WorkersView } from "./views/Workers";

// The graph view pulls in React Flow; load it only when a flow is opened.
const FlowView = lazy(() => import("./views/Flow"));
const TraceViewPage = lazy(() => import("./views/Trace"));

function useTheme(): [string, () => void] {
  const [theme, setTheme] = useState(() => document.documentElement.dataset.theme ?? "dark");
  const toggle = () => {
    const next = theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem("celery-flow-theme", next);
    } catch {
      /* private mode: the choice lasts for this page only */
    }
    setTheme(next);
  };
  return [theme, toggle];
}

function ConnectionIndicator() {
  const s = useLiveStatus();
  const label = {
    connecting: "Connecting",
    live: "Live",
    reconnecting: "Reconnecting",
    degraded: "Server degraded",
  }[s.state];
  const tip =
    s.state === "live"
      ? "Receiving changes as they are stored"
      : s.state === "degraded"
        ? `The server is up but its store or transport is not healthy${s.detail ? `: ${s.detail}` : ""}`
        : s.state === "reconnecting"
          ? `Lost the live connection; retrying${s.detail ? ` (${s.detail})` : ""}. Data on screen may be stale.`
          : "Opening the live connection";
  return (
    <span className={`conn conn-${s.state}`} title={tip} role="status" aria-live="polite" data-testid="conn">
      <span className="conn-dot" aria-hidden="true" />
      {label}
    </span>
  );
}

/** A thin banner saying plainly when what is on screen may be stale or incomplete. */
const sentence = (text: string) => (/[.!?]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

function StatusBanner() {
  const s = useLiveStatus();
  if (s.state === "degraded")
    return (
      <div className="banner warn" role="alert" data-testid="status-banner">
        <strong>Server degraded.</strong> {sentence(s.detail ?? "The broker, store or consumer is not healthy")} New
        events may be delayed until it recovers.
      </div>
    );
  if (s.state === "reconnecting" && s.detail)
    return (
      <div className="banner" role="status" data-testid="status-banner">
        <strong>Live updates paused:</strong> {s.detail}. Retrying; data on screen may be stale.
      </div>
    );
  return null;
}

const UUIDISH = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$|^[0-9a-f]{32}$/i;

/** Jump straight to a task id, trace id or root id; anything else becomes a free-text flow search. */
function SearchBox() {
  const { navigate } = useRouter();
  const ref = useRef<HTMLInputElement>(null);
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [miss, setMiss] = useState<string | null>(null);
  useEffect(() => {
    if (!miss) return;
    const t = window.setTimeout(() => setMiss(null), 5000);
    return () => window.clearTimeout(t);
  }, [miss]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const t = e.target as HTMLElement | null;
      const typing =
        t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
      if (e.key === "/" && !typing && !e.metaKey && !e.ctrlKey && !e.altKey) {
        e.preventDefault();
        ref.current?.focus();
        ref.current?.select();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const q = value.trim();
    if (!q) return;
    setBusy(true);
    setMiss(null);
    const exists = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
        return true;
      } catch (err) {
        if (err instanceof ApiError && (err.status === 404 || err.status === 422)) return false;
        throw err;
      }
    };
    try {
      if (await exists(() => api.task(q))) navigate(`/tasks/${encodeURIComponent(q)}`);
      else if (await exists(() => api.trace(q))) navigate(`/traces/${encodeURIComponent(q)}`);
      else if (UUIDISH.test(q)) {
        setMiss(`No task or trace with id ${q}`);
        navigate(withQuery("/", { q }));
      } else navigate(withQuery("/", { q }));
    } catch {
      navigate(withQuery("/", { q }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="search" role="search" onSubmit={submit}>
      <input
        ref={ref}
        type="search"
        placeholder="Task id, trace id or text   ( / )"
        aria-label="Search by task id, trace id or text"
        value={value}
        onChange={(e) => {
          setValue(e.target.value);
          setMiss(null);
        }}
        data-testid="search"
        disabled={busy}
      />
      {miss && (
        <span className="search-miss" role="status">
          {miss}
        </span>
      )}
    </form>
  );
}

function Nav() {
  const { loc } = useRouter();
  const item = (to: string, label: string, match: (p: string) => boolean) => (
    <Link
      to={to}
      className={match(loc.path) ? "navlink active" : "navlink"}
      aria-current={match(loc.path) ? "page" : undefined}
    >
      {label}
    </Link>
  );
  return (
    <nav className="nav" aria-label="Main">
      {item(
        "/",
        "Flows",
        (p) => p === "/" || p.startsWith("/flows") || p.startsWith("/traces") || p.startsWith("/tasks"),
      )}
      {item("/registry", "Registry", (p) => p.startsWith("/registry"))}
      {item("/workers", "Workers", (p) => p.startsWith("/workers"))}
    </nav>
  );
}

function route(path: string) {
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (seg.length === 0) return <FlowsView />;
  if (seg[0] === "flows" && seg.length === 1) return <FlowsView />;
  if (seg[0] === "flows" && seg.length === 2) {
    prefetchFlow(seg[1]);
    prewarm();
    return <FlowView rootId={seg[1]} />;
  }
  clearPrefetchedFlow();
  if (seg[0] === "tasks" && seg.length === 2) return <TaskView taskId={seg[1]} />;
  if (seg[0] === "traces" && seg.length === 2) prewarm();
  if (seg[0] === "traces" && seg.length === 2) return <TraceViewPage traceId={seg[1]} />;
  if (seg[0] === "registry" && seg.length === 1) return <RegistryView />;
  if (seg[0] === "workers" && seg.length === 1) return <WorkersView />;
  return <NotFoundView path={path} />;
}

export function App() {
  const { loc } = useRouter();
  const [theme, toggleTheme] = useTheme();
  const full = loc.path.startsWith("/flows/");
  return (
    <div className={`app ${full ? "app-full" : ""}`}>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/" className="brand" aria-label="celery-flow home">
          <svg width="20" height="20" viewBox="0 0 16 16" aria-hidden="true">
            <path d="M4 4L12 12M4 4L12 4" stroke="currentColor" strokeWidth="1.4" opacity="0.6" />
            <circle cx="4" cy="4" r="2.6" fill="var(--ok)" />
            <circle cx="12" cy="4" r="2.2" fill="var(--run)" />
            <circle cx="12" cy="12" r="2.6" fill="var(--accent)" />
          </svg>
          celery-flow
        </Link>
        <Nav />
        <SearchBox />
        <div className="topbar-right">
          <ConnectionIndicator />
          <button
            type="button"
            className="btn icon"
            onClick={toggleTheme}
            aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
            title={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
            data-testid="theme-toggle"
          >
            {theme === "dark" ? "☀" : "☾"}
          </button>
        </div>
      </header>
      <StatusBanner />
      <main id="main" className="main" tabIndex={-1}>
        <Suspense fallback={<Loading what="Loading view" />}>{route(loc.path)}</Suspense>
      </main>
    </div>
  );
}
