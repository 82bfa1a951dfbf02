// One layout worker per page, answering requests in order; a newer request makes older answers moot.
// LayoutProvider owns it: started by the first prewarm() or layout(), ended when the provider unmounts.
import { createContext, createElement, useContext, useEffect, useState, type ReactNode } from "react";
import type { LayoutRequest, LayoutResult } from "./layoutTypes";

export class LayoutClient {
  private worker: Worker | null = null;
  private seq = 0;
  private pending = new Map<number, (r: LayoutResult) => void>();

  private getWorker(): Worker {
    if (!this.worker) {
      this.worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module" });
      this.worker.onmessage = (ev: MessageEvent<LayoutResult>) => {
        const done = this.pending.get(ev.data.seq);
        this.pending.delete(ev.data.seq);
        done?.(ev.data);
      };
    }
    return this.worker;
  }

  /** Start the worker (and its 1.4 MB ELK bundle parsing) while the flow's data is still being fetched. */
  prewarm(): void {
    this.getWorker();
  }

  layout(req: Omit<LayoutRequest, "seq">): Promise<LayoutResult> {
    const s = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(s, resolve);
      this.getWorker().postMessage({ ...req, seq: s });
    });
  }

  /** End the worker; requests still waiting get an error result. */
  dispose(): void {
    this.worker?.terminate();
    this.worker = null;
    for (const [seq, done] of this.pending) done({ seq, positions: {}, ms: 0, error: "layout stopped" });
    this.pending.clear();
  }
}

const LayoutContext = createContext<LayoutClient | null>(null);

export function LayoutProvider({ children }: { children: ReactNode }) {
  const [client] = useState(() => new LayoutClient());
  useEffect(() => () => client.dispose(), [client]);
  return createElement(LayoutContext.Provider, { value: client }, children);
}

export function useLayoutClient(): LayoutClient {
  const client = useContext(LayoutContext);
  if (!client) throw new Error("useLayoutClient needs a LayoutProvider");
  return client;
}
