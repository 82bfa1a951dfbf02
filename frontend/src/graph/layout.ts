// One layout worker per page, answering requests in order; a newer request makes older answers moot.
import type { LayoutRequest, LayoutResult } from "./layoutTypes";

let worker: Worker | null = null;
let seq = 0;
const pending = new Map<number, (r: LayoutResult) => void>();

function getWorker(): Worker {
  if (!worker) {
    worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module" });
    worker.onmessage = (ev: MessageEvent<LayoutResult>) => {
      const done = pending.get(ev.data.seq);
      pending.delete(ev.data.seq);
      done?.(ev.data);
    };
  }
  return worker;
}

/** Start the worker (and its 1.4 MB ELK bundle parsing) while the flow's data is still being fetched. */
export function prewarm(): void {
  getWorker();
}

export function layout(req: Omit<LayoutRequest, "seq">): Promise<LayoutResult> {
  const s = ++seq;
  return new Promise((resolve) => {
    pending.set(s, resolve);
    getWorker().postMessage({ ...req, seq: s });
  });
}
