// The graph + timeline + task panel workspace shared by a flow page and a trace page. Live pushes update
// task states in place at once; a debounced refetch then brings segments, new tasks, the critical path
// and the server's summary (state, counts, duration) the header shows.
import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import type { CollapsedGroup, GraphNode, GraphShape, TaskSummary } from "../api/types";
import { TERMINAL } from "../api/types";
import { api } from "../api/client";
import { TaskDetailLoader } from "../components/TaskDetail";
import { useLiveGroups, useLiveRefetch, useLiveTasks } from "../live";
import { useSearchParams } from "../router";
import { FlowGraphView } from "./FlowGraphView";
import { buildStructure, EXPAND_STEP, pickToExpand, type FlowLabel, type Structure } from "./structure";
import { Timeline } from "./Timeline";

export type Mode = "graph" | "split" | "timeline";


function readMode(): Mode {
  try {
    const m = localStorage.getItem("celery-flow-mode");
    if (m === "graph" || m === "split" || m === "timeline") return m;
  } catch {
    /* ignore */
  }
  return "split";
}

/** Keep the previous task object when nothing about it changed, so its node does not re-render. */
function mergeTasks(prev: Map<string, GraphNode> | null, nodes: GraphNode[]): Map<string, GraphNode> {
  const out = new Map<string, GraphNode>();
  for (const n of nodes) {
    const old = prev?.get(n.task_id);
    if (
      old &&
      old.updated_at === n.updated_at &&
      old.state === n.state &&
      (old.segments?.length ?? 0) === (n.segments?.length ?? 0) &&
      old.retries === n.retries
    )
      out.set(n.task_id, old);
    else out.set(n.task_id, n);
  }
  return out;
}

export interface WorkspaceProps {
  graph: GraphShape;
  flows?: FlowLabel[];
  /** The page's header; its state and figures come from the server (refetched after live changes). */
  header: (info: {
    mode: Mode;
    setMode: (m: Mode) => void;
    critOn: boolean;
    setCritOn: (v: boolean) => void;
    focus: string | null;
    setFocus: (state: string | null) => void;
  }) => ReactNode;
  /** The flow's root id, for paging through collapsed groups (a trace page has none). */
  rootId?: string;
  /** Which pushed tasks belong here (a root id or a trace id). */
  accept: (t: TaskSummary) => boolean;
  refetch: () => void;
}

/** Members of collapsed groups fetched page by page ("show more"), drawn as if the server had sent them. */
interface Fetched {
  nodes: GraphNode[];
  cursor: string | null;
}

function withFetched(graph: GraphShape, fetched: ReadonlyMap<string, Fetched>): GraphShape {
  if (fetched.size === 0) return graph;
  const have = new Set(graph.nodes.map((n) => n.task_id));
  const nodes = [...graph.nodes];
  const edges = [...graph.edges];
  const added = new Map<string, string[]>();
  for (const [groupId, f] of fetched) {
    const ids: string[] = [];
    const c = graph.collapsed?.find((x) => x.id === groupId);
    for (const n of f.nodes) {
      if (have.has(n.task_id)) continue;
      have.add(n.task_id);
      nodes.push(n);
      ids.push(n.task_id);
      if (n.parent_id) edges.push({ source: n.parent_id, target: n.task_id, kind: "spawn", count: 1 });
      if (c?.callback_id) edges.push({ source: n.task_id, target: c.callback_id, kind: "chord", count: 1 });
    }
    added.set(groupId, ids);
  }
  const groups = graph.groups.map((g) =>
    added.has(g.id) ? { ...g, members: [...g.members, ...added.get(g.id)!] } : g,
  );
  const collapsed = (graph.collapsed ?? []).map((c) => {
    const ids = added.get(c.id);
    if (!ids?.length) return c;
    // Drawn on their own now: the collapsed node stands for fewer members, and the edges to it too.
    return { ...c, listed: [...c.listed, ...ids] };
  });
  const shrink = new Map(collapsed.map((c) => [c.node_id, added.get(c.id)?.length ?? 0]));
  const summarised = edges.map((e) => {
    const less = shrink.get(e.source) ?? shrink.get(e.target) ?? 0;
    return less && (e.count ?? 1) > 1 ? { ...e, count: Math.max(0, (e.count ?? 1) - less) } : e;
  });
  return { ...graph, nodes, edges: summarised.filter((e) => (e.count ?? 1) > 0), groups, collapsed };
}

export function Workspace({ graph: served, flows, header, accept, refetch, rootId }: WorkspaceProps) {
  const [fetched, setFetched] = useState<ReadonlyMap<string, Fetched>>(() => new Map());
  const graph = useMemo(() => withFetched(served, fetched), [served, fetched]);
  // Live figures of collapsed groups, newer than the graph's until the next refetch brings them.
  const [liveGroups, setLiveGroups] = useState<ReadonlyMap<string, CollapsedGroup>>(() => new Map());
  const [groupsOf, setGroupsOf] = useState(served);
  if (groupsOf !== served) {
    setGroupsOf(served);
    setLiveGroups(new Map());
  }
  const refetchSoon = useRef<number | null>(null);
  useLiveGroups((group) => {
    if (!served.collapsed?.some((c) => c.id === group.id)) return;
    setLiveGroups((m) => new Map(m).set(group.id, group));
    // The header's counts and the critical path: a refetch now and then, not on every push.
    refetchSoon.current ??= window.setTimeout(() => {
      refetchSoon.current = null;
      refetch();
    }, 3000);
  });
  useEffect(() => () => void (refetchSoon.current !== null && window.clearTimeout(refetchSoon.current)), []);
  const [search, setSearch] = useSearchParams();
  const selected = search.get("task");
  const [mode, setModeState] = useState<Mode>(readMode);
  const [critOn, setCritOn] = useState(true);
  // A state picked in the header's counts: other tasks are dimmed in the graph and hidden in the timeline.
  const [focus, setFocus] = useState<string | null>(null);
  const [expanded, setExpanded] = useState<Map<string, ReadonlySet<string>>>(() => new Map());
  const [tasks, setTasks] = useState<Map<string, GraphNode>>(() => mergeTasks(null, graph.nodes));
  // A fresh graph from the server: merge, keeping unchanged task objects.
  const [merged, setMerged] = useState(graph);
  if (merged !== graph) {
    setMerged(graph);
    setTasks((prev) => mergeTasks(prev, graph.nodes));
  }

  const setMode = (m: Mode) => {
    setModeState(m);
    try {
      localStorage.setItem("celery-flow-mode", m);
    } catch {
      /* ignore */
    }
  };

  // The structure only changes identity when its key changes: that alone triggers a layout.
  const built = useMemo(() => buildStructure(graph, expanded, flows), [graph, expanded, flows]);
  const [structure, setStructure] = useState<Structure>(built);
  if (structure !== built && structure.key !== built.key) setStructure(built);

  // Live: apply states in place now; refetch (debounced) for segments, new tasks and the critical path.
  useLiveRefetch(refetch, (items) => items.some(accept), 600);
  useLiveTasks((items) => {
    const mine = items.filter(accept);
    if (!mine.length) return;
    setTasks((prev) => {
      let next: Map<string, GraphNode> | null = null;
      for (const item of mine) {
        const old = prev.get(item.task_id);
        if (!old) continue;
        if (old.updated_at === item.updated_at && old.state === item.state) continue;
        next ??= new Map(prev);
        next.set(item.task_id, { ...old, ...item, segments: old.segments });
      }
      return next ?? prev;
    });
  });

  const running = useMemo(() => [...tasks.values()].some((t) => !TERMINAL.has(t.state)), [tasks]);
  const critical = useMemo(
    () => new Set(critOn ? (graph.critical_path ?? []) : []),
    [graph.critical_path, critOn],
  );
  const taskList = useMemo(
    () => [...tasks.values()].filter((t) => focus === null || t.state === focus),
    [tasks, focus],
  );

  const select = useCallback(
    (id: string | null) =>
      setSearch(
        (params) => {
          const next = new URLSearchParams(params);
          if (id) next.set("task", id);
          else next.delete("task");
          return next;
        },
        { replace: true },
      ),
    [setSearch],
  );
  // Draw the next tasks of a collapsed fan-out, the ones worth looking at first (failures, running).
  // A group the server collapsed: fetch its next page of members, slowest first.
  const expand = useCallback(
    (clusterId: string) => {
      const server = graph.collapsed?.find((c) => c.node_id === clusterId);
      if (server && rootId) {
        const before = fetched.get(server.id);
        if (before && before.cursor === null) return;
        void api
          .members(rootId, server.id, { sort: "slowest", limit: EXPAND_STEP, cursor: before?.cursor ?? null })
          .then((page) =>
            setFetched((m) => {
              const prev = m.get(server.id);
              return new Map(m).set(server.id, {
                nodes: [...(prev?.nodes ?? []), ...page.items],
                cursor: page.next_cursor ?? null,
              });
            }),
          );
        return;
      }
      const cluster = structure.nodes.find((n) => n.id === clusterId);
      if (!cluster?.members) return;
      const pick = pickToExpand(cluster.members, (id) => tasks.get(id)?.state);
      setExpanded((m) => new Map(m).set(clusterId, new Set([...(m.get(clusterId) ?? []), ...pick])));
    },
    [structure, tasks, graph.collapsed, fetched, rootId],
  );

  useEffect(() => {
    if (!selected) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") select(null);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [selected, select]);

  const graphEl = (
    <FlowGraphView
      structure={structure}
      tasks={tasks}
      critical={critical}
      selected={selected}
      running={running}
      onOpenTask={(id) => select(id)}
      onExpand={expand}
      focus={focus}
      liveGroups={liveGroups}
    />
  );
  const timelineEl = (
    <Timeline
      tasks={taskList}
      critical={critical}
      selected={selected}
      running={running}
      onSelect={(id) => select(id)}
      note={focus ? `${focus.toLowerCase()} only` : null}
      more={(graph.collapsed ?? [])
        .filter((c) => c.total > c.listed.length && fetched.get(c.id)?.cursor !== null)
        .map((c) => ({
          id: c.id,
          label: c.name ? c.name.slice(c.name.lastIndexOf(".") + 1) : "tasks",
          count: c.total - c.listed.length,
          load: () => expand(c.node_id),
        }))}
    />
  );

  return (
    <div className="flowpage">
      {header({ mode, setMode, critOn, setCritOn, focus, setFocus })}
      <div className="flowbody">
        <div className="flowmain">
          {mode === "graph" && graphEl}
          {mode === "timeline" && timelineEl}
          {mode === "split" && (
            <div className="split">
              {graphEl}
              {timelineEl}
            </div>
          )}
        </div>
        {selected && (
          <aside className="sidepanel" aria-label="Task detail" data-testid="sidepanel">
            <button
              type="button"
              className="btn icon close"
              onClick={() => select(null)}
              aria-label="Close task detail (Esc)"
              title="Close (Esc)"
            >
              ✕
            </button>
            <TaskDetailLoader taskId={selected} known={tasks} compact />
          </aside>
        )}
      </div>
    </div>
  );
}

export function ModeSwitch({ mode, setMode }: { mode: Mode; setMode: (m: Mode) => void }) {
  return (
    <span className="seg-ctl" role="tablist" aria-label="View">
      {(["graph", "split", "timeline"] as Mode[]).map((m) => (
        <button
          key={m}
          type="button"
          role="tab"
          aria-selected={mode === m}
          onClick={() => setMode(m)}
          data-testid={`mode-${m}`}
        >
          {m === "graph" ? "Graph" : m === "split" ? "Graph + timeline" : "Timeline"}
        </button>
      ))}
    </span>
  );
}
