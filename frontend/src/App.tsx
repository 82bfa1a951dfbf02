import { useQueryClient } from "@tanstack/react-query";
import { lazy, Suspense, useEffect, useRef, useState, type FormEvent } from "react";
import { api, ApiError } from "./api/client";
import { flowQuery } from "./api/queries";
import { Loading, SEARCH_HINT } from "./components/common";
import { useLayoutClient } from "./graph/layout";
import { useLiveStatus } from "./live";
import { Link, param, Redirect, Route, Switch, useLocation, useNavigate, useSearchParams, withQuery } from "./router";
import { setTheme, useTheme } from "./theme";
import { FlowsView } from "./views/Flows";
import { NotFoundView } from "./views/NotFound";
import { RegistryView } from "./views/Registry";
import { TaskView } from "./views/Task";
import { TasksView } from "./views/Tasks";
import { SchedulesView } from "./views/Schedules";
import { WorkersView } from "./views/Workers";

// The graph views pull in React Flow; load them only when a flow or a trace is opened.
const FlowView = lazy(() => import("./views/Flow"));
const TraceView = lazy(() => import("./views/Trace"));
// The pages with charts pull in uPlot; load them when opened.
const FailuresView = lazy(() => import("./views/Failures"));
const OverviewView = lazy(() => import("./views/Overview"));
const TaskNameView = lazy(() => import("./views/TaskName"));

/** What the flows list reads from its URL; the list lived at "/" before, so "/?state=..." still opens it. */
const FLOW_PARAMS = ["state", "name", "range", "trace_id", "q", "worker", "since", "until", "cursor"];

/** "/": the overview; a link made for the flows list when it was there goes to /flows with its query. */
function Home() {
  const [search] = useSearchParams();
  if (FLOW_PARAMS.some((k) => search.has(k))) return <Redirect to={`/flows?${search.toString()}`} replace />;
  return <OverviewView />;
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

/**
 * Jump straight to a task id, trace id or root id; anything else lists the tasks it finds (ids, names,
 * words in arguments, results and errors, key:value for a kwarg).
 */
function SearchBox() {
  const navigate = useNavigate();
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
      // Text with a space or a quote is no id: straight to the tasks it finds.
      if (/[\s"']/.test(q)) navigate(withQuery("/tasks", { q }));
      else if (await exists(() => api.task(q))) navigate(`/tasks/${encodeURIComponent(q)}`);
      else if (await exists(() => api.trace(q))) navigate(`/traces/${encodeURIComponent(q)}`);
      else {
        if (UUIDISH.test(q)) setMiss(`No task or trace with id ${q}`);
        navigate(withQuery("/tasks", { q }));
      }
    } catch {
      navigate(withQuery("/tasks", { q }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="search" role="search" onSubmit={(e) => void submit(e)}>
      <input
        ref={ref}
        type="search"
        placeholder="Search tasks: id, args, key:value   ( / )"
        aria-label="Search tasks by id, trace id, name, words in arguments, results and errors, or key:value"
        title={`Search: ${SEARCH_HINT}`}
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
  const [path] = useLocation();
  const item = (to: string, label: string, match: (p: string) => boolean) => (
    <Link
      to={to}
      className={match(path) ? "navlink active" : "navlink"}
      aria-current={match(path) ? "page" : undefined}
    >
      {label}
    </Link>
  );
  return (
    <nav className="nav" aria-label="Main">
      {item("/", "Overview", (p) => p === "/")}
      {item("/flows", "Flows", (p) => p.startsWith("/flows") || p.startsWith("/traces") || p.startsWith("/tasks/"))}
      {item("/tasks", "Tasks", (p) => p === "/tasks")}
      {item("/failures", "Failures", (p) => p.startsWith("/failures"))}
      {item("/registry", "Registry", (p) => p.startsWith("/registry"))}
      {item("/schedules", "Schedules", (p) => p.startsWith("/schedules"))}
      {item("/workers", "Workers", (p) => p.startsWith("/workers"))}
    </nav>
  );
}

/**
 * The flow and trace pages: their graph view's code loads lazily, and meanwhile the layout worker starts
 * and (for a flow) its graph is fetched. The inner Suspense lets this effect run while the code loads.
 */
function GraphRoute({ kind, id }: { kind: "flow" | "trace"; id: string }) {
  const queryClient = useQueryClient();
  const layout = useLayoutClient();
  useEffect(() => {
    layout.prewarm();
    if (kind !== "flow") return;
    void queryClient.prefetchQuery(flowQuery(id));
    // Coming back to this flow later refetches it, even within the few seconds its data counts as fresh.
    return () => void queryClient.invalidateQueries({ queryKey: flowQuery(id).queryKey, refetchType: "none" });
  }, [kind, id, layout, queryClient]);
  return (
    <Suspense fallback={<Loading what="Loading view" />}>
      {kind === "flow" ? <FlowView key={id} rootId={id} /> : <TraceView key={id} traceId={id} />}
    </Suspense>
  );
}

function Routes() {
  return (
    <Switch>
      <Route path="/" component={Home} />
      <Route path="/flows" component={FlowsView} />
      <Route path="/flows/:id">{({ id }) => <GraphRoute kind="flow" id={param(id)} />}</Route>
      <Route path="/traces/:id">{({ id }) => <GraphRoute kind="trace" id={param(id)} />}</Route>
      <Route path="/tasks" component={TasksView} />
      <Route path="/failures" component={FailuresView} />
      <Route path="/tasks/:id">{({ id }) => <TaskView taskId={param(id)} />}</Route>
      <Route path="/registry" component={RegistryView} />
      <Route path="/registry/:name">{({ name }) => <TaskNameView key={name} name={param(name)} />}</Route>
      <Route path="/workers" component={WorkersView} />
      <Route path="/schedules" component={SchedulesView} />
      <Route component={NotFoundView} />
    </Switch>
  );
}

export function App() {
  const [path] = useLocation();
  const theme = useTheme();
  const full = path.startsWith("/flows/");
  const next = theme === "dark" ? "light" : "dark";
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
            onClick={() => setTheme(next)}
            aria-label={`Switch to ${next} theme`}
            title={`Switch to ${next} theme`}
            data-testid="theme-toggle"
          >
            {theme === "dark" ? "☀" : "☾"}
          </button>
        </div>
      </header>
      <StatusBanner />
      <main id="main" className="main" tabIndex={-1}>
        <Suspense fallback={<Loading what="Loading view" />}>
          <Routes />
        </Suspense>
      </main>
    </div>
  );
}
