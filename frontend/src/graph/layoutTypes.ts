export interface LayoutRequest {
  seq: number;
  /** Containers present: lay out across hierarchy levels (slower, so only when needed). */
  hierarchical: boolean;
  nodes: { id: string; width: number; height: number; parent?: string | null }[];
  containers: { id: string; parent?: string | null }[];
  edges: { id: string; source: string; target: string }[];
}

export interface LayoutResult {
  seq: number;
  positions: Record<string, { x: number; y: number; width: number; height: number }>;
  ms: number;
  error?: string;
}
