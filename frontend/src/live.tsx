// One WebSocket to /api/live for the whole app, reconnecting with backoff. Views subscribe to task
// batches; the header shows the honest connection state (live / reconnecting / server degraded).
import { useQueryClient, type QueryKey } from "@tanstack/react-query";
import {
  createContext,
  useContext,
  useEffect,
  useEffectEvent,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import { wsUrl } from "./api/base";
import type { CollapsedGroup, LiveMessage, TaskSummary } from "./api/types";

export type ConnState = "connecting" | "live" | "reconnecting" | "degraded";

export interface LiveStatus {
  state: ConnState;
  detail: string | null;
  since: number;
}

type Listener = (items: TaskSummary[]) => void;
/** The current figures of a group the page draws collapsed, pushed instead of its members' changes. */
type GroupListener = (group: CollapsedGroup) => void;

/** The socket and its listeners; owned by LiveProvider, which starts and stops it. */
class LiveHub {
  private ws: WebSocket | null = null;
  private listeners = new Set<Listener>();
  private groupListeners = new Set<GroupListener>();
  private resyncListeners = new Set<() => void>();
  private statusListeners = new Set<() => void>();
  private connectedBefore = false;
  private attempt = 0;
  private timer: number | null = null;
  private filter: { root_id: string | null; trace_id: string | null; collapsed: string[] } = {
    root_id: null,
    trace_id: null,
    collapsed: [],
  };
  status: LiveStatus = { state: "connecting", detail: null, since: Date.now() };

  constructor(private readonly url: string) {}

  /** Connect on the next tick: a stop() right after (React's development double mount) opens nothing. */
  start() {
    if (this.ws || this.timer !== null) return;
    this.timer = window.setTimeout(() => this.connect(), 0);
  }

  stop() {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null; // first, so its close event does not schedule a reconnect
    ws?.close();
  }

  private setStatus(state: ConnState, detail: string | null) {
    if (state === this.status.state && detail === this.status.detail) return;
    this.status = { state, detail, since: Date.now() };
    for (const l of this.statusListeners) l();
  }

  private connect() {
    this.timer = null;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.sendFilter();
    };
    ws.onmessage = (ev) => {
      let msg: LiveMessage;
      try {
        msg = JSON.parse(String(ev.data)) as LiveMessage;
      } catch {
        return;
      }
      if (msg.type === "hello") {
        this.setStatus(msg.status === "ok" ? "live" : "degraded", null);
        // Changes made while the socket was down were never pushed: what is shown is reloaded.
        if (this.connectedBefore) for (const l of this.resyncListeners) l();
        this.connectedBefore = true;
      } else if (msg.type === "status") this.setStatus(msg.status === "ok" ? "live" : "degraded", msg.detail ?? null);
      else if (msg.type === "tasks" && Array.isArray(msg.items)) {
        for (const l of this.listeners) l(msg.items);
      } else if (msg.type === "group" && msg.group) {
        for (const l of this.groupListeners) l(msg.group);
      }
    };
    ws.onclose = () => {
      if (this.ws === ws) {
        this.ws = null;
        this.scheduleReconnect();
      }
    };
  }

  private scheduleReconnect() {
    this.setStatus("reconnecting", this.attempt > 2 ? "the server is not answering" : null);
    const delay = Math.min(10_000, 500 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.timer = window.setTimeout(() => this.connect(), delay);
  }

  private sendFilter() {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "filter", ...this.filter }));
  }

  /** Ask the server for every change (null) or only one flow's / trace's; `collapsed` names the flow's
   * groups drawn collapsed, whose members' changes then come as their group's figures. */
  setFilter(root_id: string | null, trace_id: string | null, collapsed: string[] = []) {
    this.filter = { root_id, trace_id, collapsed };
    this.sendFilter();
  }

  subscribeGroups(l: GroupListener): () => void {
    this.groupListeners.add(l);
    return () => this.groupListeners.delete(l);
  }

  /** Called after a reconnect, when pushes may have been missed. */
  onResync(l: () => void): () => void {
    this.resyncListeners.add(l);
    return () => this.resyncListeners.delete(l);
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  onStatus = (l: () => void): (() => void) => {
    this.statusListeners.add(l);
    return () => this.statusListeners.delete(l);
  };

  getStatus = (): LiveStatus => this.status;
}

const LiveContext = createContext<LiveHub | null>(null);

function useHub(): LiveHub {
  const hub = useContext(LiveContext);
  if (!hub) throw new Error("live hooks need a LiveProvider");
  return hub;
}

/** Opens the socket while mounted; after a reconnect, every query on screen is refetched. */
export function LiveProvider({ children }: { children: ReactNode }) {
  const [hub] = useState(() => new LiveHub(wsUrl("/live")));
  const queryClient = useQueryClient();
  useEffect(() => {
    const off = hub.onResync(() => void queryClient.invalidateQueries());
    hub.start();
    return () => {
      off();
      hub.stop();
    };
  }, [hub, queryClient]);
  return <LiveContext.Provider value={hub}>{children}</LiveContext.Provider>;
}

export function useLiveStatus(): LiveStatus {
  const hub = useHub();
  return useSyncExternalStore(hub.onStatus, hub.getStatus);
}

/** Call `onItems` with every pushed batch; the latest callback is used without resubscribing. */
export function useLiveTasks(onItems: Listener): void {
  const hub = useHub();
  const onBatch = useEffectEvent(onItems);
  useEffect(() => hub.subscribe((items) => onBatch(items)), [hub]);
}

/** Calls `refetch` at most once per `ms` after live changes that pass `accept`. */
export function useLiveRefetch(
  refetch: () => void,
  accept: (items: TaskSummary[]) => boolean = () => true,
  ms = 700,
): void {
  const hub = useHub();
  const wanted = useEffectEvent(accept);
  const fire = useEffectEvent(refetch);
  useEffect(() => {
    let timer: number | null = null;
    const off = hub.subscribe((items) => {
      if (timer !== null || !wanted(items)) return;
      timer = window.setTimeout(() => {
        timer = null;
        fire();
      }, ms);
    });
    return () => {
      off();
      if (timer !== null) window.clearTimeout(timer);
    };
  }, [hub, ms]);
}

/** Refetch the queries under `queryKey` (debounced by `ms`) after live changes that pass `accept`. */
export function useLiveInvalidate(
  queryKey: QueryKey,
  accept?: (items: TaskSummary[]) => boolean,
  ms?: number,
): void {
  const queryClient = useQueryClient();
  useLiveRefetch(() => void queryClient.invalidateQueries({ queryKey }), accept, ms);
}

/** While mounted, ask the server only for one flow's (root_id) or one trace's changes; `collapsed` (a
 * comma-joined list of group ids) are the flow's groups drawn collapsed. */
export function useLiveFilter(rootId: string | null, traceId: string | null, collapsed = ""): void {
  const hub = useHub();
  useEffect(() => {
    hub.setFilter(rootId, traceId, collapsed ? collapsed.split(",") : []);
    return () => hub.setFilter(null, null);
  }, [hub, rootId, traceId, collapsed]);
}

/** Call `onGroup` with every pushed figure of a collapsed group. */
export function useLiveGroups(onGroup: GroupListener): void {
  const hub = useHub();
  const on = useEffectEvent(onGroup);
  useEffect(() => hub.subscribeGroups((g) => on(g)), [hub]);
}
