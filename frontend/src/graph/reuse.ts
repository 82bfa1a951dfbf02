/**
 * Keeps the objects built for the previous render when their inputs are the same (===), so React Flow
 * re-renders only the nodes that changed. Owned by one component (held in its state); `get` the items of
 * a render, then `commit()` to forget those not asked for.
 */
export class ReuseTable<T> {
  private prev = new Map<string, { dep: readonly unknown[]; value: T }>();
  private next = new Map<string, { dep: readonly unknown[]; value: T }>();

  get(id: string, dep: readonly unknown[], make: () => T): T {
    const have = this.prev.get(id);
    if (have && have.dep.length === dep.length && have.dep.every((d, i) => d === dep[i])) {
      this.next.set(id, have);
      return have.value;
    }
    const value = make();
    this.next.set(id, { dep, value });
    return value;
  }

  commit(): void {
    this.prev = this.next;
    this.next = new Map();
  }
}
