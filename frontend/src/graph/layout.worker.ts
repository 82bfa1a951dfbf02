// ELK's layered layout off the main thread: a 2,000-node flow takes ~1 s to lay out, and the page must
// stay responsive (scrolling, live updates, the side panel) meanwhile.
import ELK from "elkjs/lib/elk.bundled.js";
import type { LayoutRequest, LayoutResult } from "./layoutTypes";

const elk = new ELK();

// ELK is compiled Java: its first layout runs cold (several times slower). The worker starts while the
// flow's data is still downloading, so warm it up on a small graph with a container meanwhile.
function warmGraph() {
  const children: ElkNode[] = [];
  const edges: { id: string; sources: string[]; targets: string[] }[] = [];
  for (let i = 0; i < 40; i++) {
    children.push({ id: `w${i}`, width: 210, height: 58 });
    if (i) edges.push({ id: `we${i}`, sources: [`w${Math.floor((i - 1) / 3)}`], targets: [`w${i}`] });
  }
  const box: ElkNode = {
    id: "wbox",
    children: [
      { id: "wb1", width: 210, height: 58 },
      { id: "wb2", width: 210, height: 58 },
    ],
  };
  edges.push({ id: "wx1", sources: ["w0"], targets: ["wb1"] }, { id: "wx2", sources: ["wb2"], targets: ["w1"] });
  return {
    id: "__warm",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.hierarchyHandling": "INCLUDE_CHILDREN",
    },
    children: [...children, box],
    edges,
  };
}
const warm: Promise<unknown> = elk.layout(warmGraph()).catch(() => undefined);

interface ElkNode {
  id: string;
  width?: number;
  height?: number;
  x?: number;
  y?: number;
  children?: ElkNode[];
  layoutOptions?: Record<string, string>;
}

self.onmessage = async (ev: MessageEvent<LayoutRequest>) => {
  const req = ev.data;
  await warm;
  const t0 = performance.now();
  try {
    const byId = new Map<string, ElkNode>();
    const top: ElkNode[] = [];
    for (const c of req.containers) {
      byId.set(c.id, {
        id: c.id,
        children: [],
        layoutOptions: {
          "elk.padding": "[top=30,left=14,bottom=14,right=14]",
          "elk.direction": "RIGHT",
        },
      });
    }
    for (const n of req.nodes) byId.set(n.id, { id: n.id, width: n.width, height: n.height });
    const place = (id: string, parent: string | null | undefined) => {
      const node = byId.get(id)!;
      const p = parent ? byId.get(parent) : undefined;
      if (p?.children) p.children.push(node);
      else top.push(node);
    };
    for (const c of req.containers) place(c.id, c.parent);
    for (const n of req.nodes) place(n.id, n.parent);
    // Containers that ended up empty (all members collapsed elsewhere) would be laid out as 0×0 boxes.
    const graph = {
      id: "__root",
      layoutOptions: {
        "elk.algorithm": "layered",
        "elk.direction": "RIGHT",
        "elk.hierarchyHandling": req.hierarchical ? "INCLUDE_CHILDREN" : "INHERIT",
        "elk.layered.spacing.nodeNodeBetweenLayers": "56",
        "elk.spacing.nodeNode": "16",
        "elk.layered.spacing.edgeNodeBetweenLayers": "20",
        "elk.spacing.componentComponent": "40",
        "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
        "elk.layered.crossingMinimization.strategy": "LAYER_SWEEP",
        "elk.layered.thoroughness": req.nodes.length > 600 ? "1" : "7",
        "elk.separateConnectedComponents": "true",
      },
      children: top,
      edges: req.edges.map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
    };
    const out = (await elk.layout(graph)) as ElkNode;
    const positions: LayoutResult["positions"] = {};
    const walk = (n: ElkNode) => {
      for (const c of n.children ?? []) {
        positions[c.id] = { x: c.x ?? 0, y: c.y ?? 0, width: c.width ?? 0, height: c.height ?? 0 };
        walk(c);
      }
    };
    walk(out);
    const result: LayoutResult = { seq: req.seq, positions, ms: performance.now() - t0 };
    (self as unknown as Worker).postMessage(result);
  } catch (err) {
    const result: LayoutResult = { seq: req.seq, positions: {}, ms: performance.now() - t0, error: String(err) };
    (self as unknown as Worker).postMessage(result);
  }
};
