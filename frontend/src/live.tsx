// One WebSocket to /api/live for the whole app, reconnecting with backoff. Views subscribe to task
// batches; the header shows the honest connection state (live / reconnecting / server degraded).
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { wsUrl } from "./api/base";
import type { LiveMessage, TaskSummary } from "./api/types";

export type ConnState = "connecting" | "live" | "reconnecting" | "degraded";

export interface LiveStatus {
  state: ConnState;
  detail: string | null;
  since: number;
}

type Listener = (items: TaskSummary[]) => void;

class LiveHub {
  private ws: WebSocket | null = null;
  private listeners = new Set<Listener>();
  private resyncListeners = new Set<() => void>();
  private connectedBefore = false;
  private statusListeners = new Set<(s: LiveStatus) => void>();
  private attempt = 0;
  private timer: number | null = null;
  private filter: { root_id: string | null; trace_id: string | null } = { root_id: null, trace_id: null };
  status: LiveStatus = { state: "connecting", detail: null, since: Date.now() };

  start() {
    if (this.ws || this.timer !== null) return;
    this.connect();
  }

  private setStatus(state: ConnState, detail: string | null) {
    if (state === this.status.state && detail === this.status.detail) return;
    this.status = { state, detail, since: Date.now() };
    for (const l of this.statusListeners) l(this.status);
  }

  private connect() {
    this.timer = null;
    let ws: WebSocket;
    try {
      ws = new WebSocket(wsUrl("/live"));
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
        // Changes made while the socket was down were never pushed: views reload what they show.
        if (this.connectedBefore) for (const l of this.resyncListeners) l();
        this.connectedBefore = true;
      }
      else if (msg.type === "status") this.setStatus(msg.status === "ok" ? "live" : "degraded", msg.detail ?? null);
      else if (msg.type === "tasks" && Array.isArray(msg.items)) {
        for (const l of this.listeners) l(msg.items);
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

  /** Ask the server for every change (null) or only one flow's / trace's. */
  setFilter(root_id: string | null, trace_id: string | null) {
    this.filter = { root_id, trace_id };
    this.sendFilter();
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

  onStatus(l: (s: LiveStatus) => void): () => void {
    this.statusListeners.add(l);
    return () => this.statusListeners.delete(l);
  }
}

const hub = new LiveHub();
const LiveContext = createContext<LiveHub>(hub);

export function LiveProvider({ children }: { children: ReactNode }) {
  useEffect(() => hub.start(), []);
  return <LiveContext.Provider value={hub}>{children}</LiveContext.Provider>;
}

export function useLiveStatus(): LiveStatus {
  const h = useContext(LiveContext);
  const [s, setS] = useState(h.status);
  useEffect(() => h.onStatus(setS), [h]);
  return s;
}

/** Call `onItems` with every pushed batch; the latest callback is used without resubscribing. */
export function useLiveTasks(onItems: Listener): void {
  const h = useContext(LiveContext);
  const ref = useRef(onItems);
  ref.current = onItems;
  useEffect(() => h.subscribe((items) => ref.current(items)), [h]);
}

/** Calls `refetch` at most once per `ms` after live changes that pass `accept`. */
export function useDebouncedLiveRefetch(
  refetch: () => void,
  accept: (items: TaskSummary[]) => boolean = () => true,
  ms = 700,
): void {
  const timer = useRef<number | null>(null);
  const fn = useRef(refetch);
  fn.current = refetch;
  useEffect(
    () => () => {
      if (timer.current !== null) window.clearTimeout(timer.current);
    },
    [],
  );
  useResync(() => fn.current());
  useLiveTasks((items) => {
    if (!accept(items) || timer.current !== null) return;
    timer.current = window.setTimeout(() => {
      timer.current = null;
      fn.current();
    }, ms);
  });
}

/** While mounted, ask the server only for one flow's (root_id) or one trace's changes. */
export function useLiveFilter(rootId: string | null, traceId: string | null): void {
  const h = useContext(LiveContext);
  useEffect(() => {
    h.setFilter(rootId, traceId);
    return () => h.setFilter(null, null);
  }, [h, rootId, traceId]);
}

/** Call `reload` after the live socket reconnects (whatever changed meanwhile was not pushed). */
export function useResync(reload: () => void): void {
  const h = useContext(LiveContext);
  const ref = useRef(reload);
  ref.current = reload;
  useEffect(() => h.onResync(() => ref.current()), [h]);
}
