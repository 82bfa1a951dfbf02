// /schedules: the periodic tasks beat sends. Each entry with its schedule, its last runs as a strip (on
// time, late, failed, missed), when the next run is expected, and links to its runs; a banner when beat is
// down, since then every entry is late because of beat, not because of its task (docs/schedules.md).
import { useQuery } from "@tanstack/react-query";
import { schedulesQuery } from "../api/queries";
import type { ScheduleRunView, Schedules, ScheduleView } from "../api/types";
import { Empty, ErrorBox, Loading } from "../components/common";
import { fmtAgo, fmtIso, fmtSeconds, fmtTime, shortName } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useLiveRefetch } from "../live";
import { Link, withQuery } from "../router";

/** Missed markers drawn between two runs at most; more are said as "+n". */
const MAX_MISSED_MARKS = 4;

type Mark = "ok" | "late" | "failed" | "missed" | "pending";

function runMark(run: ScheduleRunView): Mark {
  if (run.state === "FAILURE" || run.state === "LOST" || run.state === "REVOKED" || run.state === "REJECTED")
    return "failed";
  if (run.late) return "late";
  if (run.state !== "SUCCESS") return "pending";
  return "ok";
}

const MARK_WORDS: Record<Mark, string> = {
  ok: "on time",
  late: "sent late",
  failed: "failed",
  missed: "missed",
  pending: "not finished",
};

function Missed({ count, what }: { count: number; what: string }) {
  if (count <= 0) return null;
  const marks = Math.min(count, MAX_MISSED_MARKS);
  return (
    <>
      {Array.from({ length: marks }, (_, i) => (
        <span key={i} className="strip-cell strip-missed" title={what} data-mark="missed" />
      ))}
      {count > marks && (
        <span className="strip-more" title={what}>
          +{count - marks}
        </span>
      )}
    </>
  );
}

/** The last runs, oldest first: each links to its task; missed runs as hollow marks where they fell. */
function Strip({ entry }: { entry: ScheduleView }) {
  const runs = [...(entry.recent ?? [])].reverse();
  if (runs.length === 0 && !entry.missed_now) return <span className="muted">no run yet</span>;
  return (
    <span className="strip" role="list" aria-label={`Last runs of ${entry.name}`} data-testid="strip">
      {runs.map((run) => {
        const mark = runMark(run);
        const due = run.due_at ? `, due ${fmtTime(run.due_at)}` : "";
        return (
          <span key={run.task_id} role="listitem" className="strip-run">
            <Missed count={run.missed_before} what={`${run.missed_before} run(s) missed before this one`} />
            <Link
              to={`/tasks/${encodeURIComponent(run.task_id)}`}
              className={`strip-cell strip-${mark}`}
              title={`${MARK_WORDS[mark]}: sent ${fmtIso(run.sent_at)}${due}${run.state ? ` (${run.state})` : ""}`}
              aria-label={`Run sent ${fmtTime(run.sent_at)}: ${MARK_WORDS[mark]}`}
              data-mark={mark}
            />
          </span>
        );
      })}
      <Missed count={entry.missed_now} what={`${entry.missed_now} run(s) missed since the last one sent`} />
    </span>
  );
}

function NextRun({ entry, now }: { entry: ScheduleView; now: number }) {
  const next = entry.expected_next_at;
  if (next === null || next === undefined) return <span className="muted">unknown</span>;
  if (entry.late)
    return (
      <span className="rate-bad" title={fmtIso(next)} data-testid="overdue">
        overdue {fmtSeconds(Math.max(0, now - next))}
        <div className="sub">was due {fmtTime(next)}</div>
      </span>
    );
  return (
    <span title={fmtIso(next)}>
      {next > now ? `in ${fmtSeconds(next - now)}` : "due now"}
      <div className="sub">{fmtTime(next)}</div>
    </span>
  );
}

function Status({ entry }: { entry: ScheduleView }) {
  if (entry.beat_up === false)
    return (
      <span
        className="sched-status beat-down"
        title={entry.late ? "Late because its beat is down, not because of the task" : "Its beat is down: nothing will send its next run"}
      >
        beat down
      </span>
    );
  if (entry.late)
    return (
      <span className="sched-status late" title="Its next run is overdue by more than the grace period">
        late
      </span>
    );
  return (
    <span className="sched-status ok" title="Its next run is not overdue">
      on time
    </span>
  );
}

function BeatBanner({ data, now }: { data: Schedules; now: number }) {
  if (!data.beat_down) return null;
  const heard = Math.max(0, ...data.beats.map((b) => b.last_heard ?? 0));
  return (
    <div className="banner warn sched-banner" role="alert" data-testid="beat-down">
      <strong>Beat is down.</strong>{" "}
      {heard ? `No beat process heard from since ${fmtTime(heard)} (${fmtAgo(heard, now)}). ` : "No beat process heard from. "}
      Every entry goes late because nothing sends its runs; the tasks themselves are not to blame. Start{" "}
      <code>celery beat</code> again (with <code>celery_flow.init(app)</code> in it).
    </div>
  );
}

export function SchedulesView() {
  useDocumentTitle("Schedules");
  const now = useNow(1000);
  // Lateness moves with the clock, not only with task changes: poll too.
  const { data, error, refetch } = useQuery({ ...schedulesQuery(), refetchInterval: 5000 });
  const reload = () => void refetch();
  useLiveRefetch(reload, undefined, 2000);
  return (
    <div className="page">
      <div className="pagehead">
        <h1>Schedules</h1>
        <span className="muted" data-testid="schedules-summary">
          {data
            ? `${data.items.length} ${data.items.length === 1 ? "entry" : "entries"} · ${data.late} late · ${data.missed} missed`
            : ""}
        </span>
        <span className="spacer" />
        <button type="button" className="btn small" onClick={reload}>
          Refresh
        </button>
      </div>
      {data && <BeatBanner data={data} now={now} />}
      {error && <ErrorBox error={error} what="schedules" />}
      {!data && !error && <Loading what="Loading schedules" />}
      {data && data.items.length === 0 && (
        <Empty>
          No schedule entry seen yet. Entries appear when a <code>celery beat</code> with celery_flow.init(app) starts.
        </Empty>
      )}
      {data && data.items.length > 0 && (
        <div className="tablewrap">
          <table className="table" data-testid="schedules-table">
            <thead>
              <tr>
                <th>Status</th>
                <th>Entry</th>
                <th>Schedule</th>
                <th>Last runs</th>
                <th>Last sent</th>
                <th>Next expected</th>
                <th className="num">Runs</th>
                <th className="num">Failed</th>
                <th className="num">Missed</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((e) => (
                <tr key={e.name} data-entry={e.name} data-late={e.late ? "true" : "false"}>
                  <td>
                    <Status entry={e} />
                  </td>
                  <td>
                    <span className="mono flowname" title={e.name}>
                      {e.name}
                    </span>
                    <div className="sub">
                      <Link to={`/registry/${encodeURIComponent(e.task)}`} className="mono" title={e.task}>
                        {shortName(e.task)}
                      </Link>
                    </div>
                  </td>
                  <td className="mono">{e.schedule || <span className="muted">–</span>}</td>
                  <td>
                    <Strip entry={e} />
                  </td>
                  <td title={fmtIso(e.last_sent_at)}>
                    {fmtAgo(e.last_sent_at, now)}
                    {e.last_sent_at ? <div className="sub">{fmtTime(e.last_sent_at)}</div> : null}
                  </td>
                  <td>
                    <NextRun entry={e} now={now} />
                  </td>
                  <td className="num">
                    <Link to={withQuery("/tasks", { name: e.task })} title="The runs of this task" data-testid="runs">
                      {e.runs.toLocaleString()}
                    </Link>
                  </td>
                  <td className="num">
                    <Link
                      to={withQuery("/tasks", { name: e.task, state: "FAILURE" })}
                      title="The failed runs of this task"
                      className={e.failures ? "rate-bad" : undefined}
                    >
                      {e.failures.toLocaleString()}
                    </Link>
                  </td>
                  <td className={`num ${e.missed ? "rate-bad" : ""}`} data-testid="missed">
                    {e.missed.toLocaleString()}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="muted sched-legend">
            <span className="strip-cell strip-ok" /> on time <span className="strip-cell strip-late" /> sent late{" "}
            <span className="strip-cell strip-failed" /> failed <span className="strip-cell strip-missed" /> missed{" "}
            <span className="strip-cell strip-pending" /> not finished · late after {fmtSeconds(data.grace)} overdue
          </p>
        </div>
      )}
    </div>
  );
}
