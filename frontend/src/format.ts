// Human-readable times and durations; all API times are epoch seconds (float).

export function fmtDuration(sec: number | null | undefined): string {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
  if (sec < 0) sec = 0;
  if (sec < 0.001) return `${Math.round(sec * 1_000_000)} µs`;
  if (sec < 1) return `${(sec * 1000).toFixed(sec < 0.01 ? 2 : 0)} ms`;
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 2 : 1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m}m ${Math.floor(sec % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** Local wall-clock time with milliseconds; the date too when it is not today. */
export function fmtTime(ts: number | null | undefined): string {
  if (ts === null || ts === undefined) return "–";
  const d = new Date(ts * 1000);
  const now = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtIso(ts: number | null | undefined): string {
  if (ts === null || ts === undefined) return "";
  return new Date(ts * 1000).toISOString();
}

export function fmtAgo(ts: number | null | undefined, now = Date.now() / 1000): string {
  if (ts === null || ts === undefined) return "never";
  const d = now - ts;
  if (d < 0) return "just now";
  if (d < 60) return `${Math.floor(d)} s ago`;
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  return `${Math.floor(d / 86400)} d ago`;
}

export function shortId(id: string | null | undefined): string {
  if (!id) return "–";
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

/** The last dotted part of a task name: "proj.tasks.add" -> "add". */
export function shortName(name: string | null | undefined): string {
  if (!name) return "(unknown task)";
  const i = name.lastIndexOf(".");
  return i >= 0 ? name.slice(i + 1) : name;
}

export function pct(x: number | null | undefined): string {
  if (x === null || x === undefined) return "–";
  return `${(x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1)}%`;
}

// How a count of tasks in a state reads ("3 never ran"); any other state reads as its lower-case name.
const STATE_WORDS: Record<string, string> = { NOT_RUN: "never ran", PLANNED: "planned", LOST: "lost" };

export function stateWords(state: string): string {
  return STATE_WORDS[state] ?? state.toLowerCase();
}

// A uuid (Celery's task ids) inside text; the capture group keeps each one in String.split's output.
const ID_IN_TEXT = /\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b/i;

/** `text` split around the task ids in it: the parts at odd indexes are the ids. */
export function splitIds(text: string): string[] {
  return text.split(ID_IN_TEXT);
}

/** `text` with every task id cut to its first 6 characters, as graph nodes show ids ("upstream 38a027 failed"). */
export function shortenIds(text: string): string {
  return splitIds(text)
    .map((part, i) => (i % 2 === 1 ? part.slice(0, 6) : part))
    .join("");
}

/** A compact duration for chart axes and tooltips: "250 µs", "12 ms", "1.5 s", "3 min", "2 h". */
export function fmtSeconds(sec: number | null | undefined): string {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return "–";
  if (sec <= 0) return "0";
  const r = (x: number) => String(+x.toPrecision(x < 10 ? 2 : 3));
  if (sec < 0.001) return `${r(sec * 1_000_000)} µs`;
  if (sec < 1) return `${r(sec * 1000)} ms`;
  if (sec < 60) return `${r(sec)} s`;
  if (sec < 3600) return `${r(sec / 60)} min`;
  return `${r(sec / 3600)} h`;
}

/** Local clock time to the minute (to the second when `seconds`), the date too when it is not today. */
export function fmtClock(ts: number, seconds = false): string {
  const d = new Date(ts * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? `:${pad(d.getSeconds())}` : ""}`;
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** A time bucket as "10:05 – 10:10" (with seconds when the bucket is shorter than a minute). */
export function fmtSpan(start: number, end: number): string {
  const seconds = end - start < 60;
  return `${fmtClock(start, seconds)} – ${fmtClock(end, seconds)}`;
}

/** A bucket width as words for an axis label: "per 5 min", "per hour". */
export function fmtPer(step: number): string {
  if (step >= 3600 && step % 3600 === 0) return step === 3600 ? "per hour" : `per ${step / 3600} h`;
  if (step >= 60 && step % 60 === 0) return step === 60 ? "per minute" : `per ${step / 60} min`;
  return `per ${fmtSeconds(step)}`;
}
