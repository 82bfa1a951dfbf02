// The time window a page looks back over (1h, 24h, 7d, ...), kept in its URL as ?window=.
import { useSearchParams } from "../router";

/** [key, words, seconds] */
export type Window = readonly [string, string, number];

export const WINDOWS: readonly Window[] = [
  ["1h", "1 hour", 3600],
  ["24h", "24 hours", 86400],
  ["7d", "7 days", 7 * 86400],
];

/** The window the URL asks for, else `fallback`. */
export function useWindow(windows: readonly Window[] = WINDOWS, fallback = "24h"): Window {
  const [search] = useSearchParams();
  return windows.find((w) => w[0] === search.get("window")) ?? windows.find((w) => w[0] === fallback)!;
}

export function WindowPicker({
  windows = WINDOWS,
  value,
  onPick,
  what,
}: {
  windows?: readonly Window[];
  value: string;
  onPick: (key: string) => void;
  /** What the window applies to, for the buttons' titles ("Failures"). */
  what: string;
}) {
  return (
    <span className="seg-ctl" role="group" aria-label="Window">
      {windows.map(([k, label]) => (
        <button
          key={k}
          type="button"
          aria-pressed={value === k}
          title={`${what} of the last ${label}`}
          onClick={() => onPick(k)}
          data-testid={`window-${k}`}
        >
          {k}
        </button>
      ))}
    </span>
  );
}
