// The parts of a flow page's and a trace page's header that show the server's figures and the view controls.
import type { StateSummary } from "../api/types";
import { CountsBar } from "../components/common";
import { fmtDuration, fmtIso, fmtTime } from "../format";
import { useNow } from "../hooks";
import { ModeSwitch, type Mode } from "./Workspace";

/** The server's figures for a flow or a trace: tasks, duration ("so far" while it runs), start, counts. */
export function FlowStats({
  summary,
  focus,
  setFocus,
}: {
  summary: StateSummary;
  focus: string | null;
  setFocus: (state: string | null) => void;
}) {
  const { task_count: count, started_at: start, duration } = summary;
  const running = summary.finished_at == null;
  const now = useNow(running ? 1000 : 60_000);
  const dur = running ? (start == null ? null : Math.max(now - start, 0)) : duration;
  return (
    <>
      <span className="stat">
        <b>{count.toLocaleString()}</b> {count === 1 ? "task" : "tasks"}
      </span>
      <span className="stat">
        <b>{fmtDuration(dur)}</b> {running ? "so far" : "total"}
      </span>
      <span className="stat" title={fmtIso(start)}>
        started <b>{fmtTime(start)}</b>
      </span>
      <div style={{ minWidth: 220 }}>
        <CountsBar counts={summary.counts} total={count} picked={focus} onPick={setFocus} />
      </div>
    </>
  );
}

export function HeaderControls({
  mode,
  setMode,
  critOn,
  setCritOn,
}: {
  mode: Mode;
  setMode: (m: Mode) => void;
  critOn: boolean;
  setCritOn: (v: boolean) => void;
}) {
  return (
    <>
      <span className="spacer" />
      <button
        type="button"
        className={`btn small ${critOn ? "on" : ""}`}
        aria-pressed={critOn}
        onClick={() => setCritOn(!critOn)}
        title="Highlight the chain of tasks that decided when the flow finished"
      >
        ◆ Critical path
      </button>
      <ModeSwitch mode={mode} setMode={setMode} />
    </>
  );
}
