// /registry: every task name seen or announced by workers, with how its runs went.
import { useQuery } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { keys, registryQuery } from "../api/queries";
import type { RegisteredTask } from "../api/types";
import { CountsBar, Empty, ErrorBox, Loading } from "../components/common";
import { fmtDuration, pct } from "../format";
import { useDocumentTitle } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, withQuery } from "../router";

type SortKey = "name" | "total" | "failure_rate" | "p50" | "p95";

export function RegistryView() {
  useDocumentTitle("Registry");
  const { data, error } = useQuery(registryQuery());
  useLiveInvalidate(keys.registry(), undefined, 3000);
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "total", desc: true });

  const rows = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const list = (data ?? []).filter(
      (r) => !f || r.name.toLowerCase().includes(f) || (r.doc ?? "").toLowerCase().includes(f),
    );
    const val = (r: RegisteredTask): number | string => (sort.key === "name" ? r.name : (r[sort.key] ?? -1));
    return [...list].sort((a, b) => {
      const x = val(a);
      const y = val(b);
      const c = x < y ? -1 : x > y ? 1 : a.name.localeCompare(b.name);
      return sort.desc ? -c : c;
    });
  }, [data, filter, sort]);

  const th = (key: SortKey, label: string, num = false) => (
    <th
      className={num ? "num" : undefined}
      aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}
    >
      <button
        type="button"
        className="thbtn"
        onClick={() => setSort({ key, desc: sort.key === key ? !sort.desc : key !== "name" })}
      >
        {label} {sort.key === key ? (sort.desc ? "↓" : "↑") : ""}
      </button>
    </th>
  );

  const total = (data ?? []).reduce((a, r) => a + r.total, 0);
  const failing = (data ?? []).filter((r) => r.failure_rate > 0).length;
  return (
    <div className="page">
      <div className="pagehead">
        <h1>Registry</h1>
        <span className="muted">every task name seen in events or announced by a worker</span>
        <span className="spacer" />
        <input
          type="search"
          placeholder="Filter by name or docstring"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          aria-label="Filter tasks"
          style={{ width: 260 }}
        />
      </div>
      {data && (
        <div className="cards">
          <div className="card">
            <div className="k">Task names</div>
            <div className="v">{data.length.toLocaleString()}</div>
          </div>
          <div className="card">
            <div className="k">Runs recorded</div>
            <div className="v">{total.toLocaleString()}</div>
          </div>
          <div className="card">
            <div className="k">Names with failures</div>
            <div className="v" style={{ color: failing ? "var(--st-FAILURE)" : undefined }}>
              {failing}
            </div>
          </div>
        </div>
      )}
      {error && <ErrorBox error={error} what="the registry" />}
      {!data && !error && <Loading what="Loading registry" />}
      {data && data.length === 0 && <Empty>No task seen yet.</Empty>}
      {data && data.length > 0 && (
        <div className="tablewrap">
          <table className="table" data-testid="registry-table">
            <thead>
              <tr>
                {th("name", "Task")}
                <th>Runs by state</th>
                {th("total", "Runs", true)}
                {th("failure_rate", "Failure rate", true)}
                {th("p50", "p50", true)}
                {th("p95", "p95", true)}
                <th>Signature</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.name} data-name={r.name}>
                  <td className="namecell">
                    <Link
                      to={`/registry/${encodeURIComponent(r.name)}`}
                      className="flowname mono"
                      title="Runtime, queue wait, trends, failures and recent runs of this task name"
                    >
                      {r.name}
                    </Link>
                    {r.doc && <div className="doc">{r.doc.split("\n\n")[0]}</div>}
                    {(r.workers?.length ?? 0) > 0 && (
                      <div className="sub">
                        on {r.workers!.slice(0, 3).join(", ")}
                        {r.workers!.length > 3 ? ` +${r.workers!.length - 3}` : ""}
                      </div>
                    )}
                  </td>
                  <td className="countscell">
                    <CountsBar counts={r.counts} total={r.total} />
                  </td>
                  <td className="num">
                    <Link to={withQuery("/tasks", { name: r.name })} title="The runs of this task name">
                      {r.total.toLocaleString()}
                    </Link>
                  </td>
                  <td className={`num ${r.failure_rate > 0.05 ? "rate-bad" : ""}`}>
                    {r.total ? pct(r.failure_rate) : "–"}
                  </td>
                  <td className="num">{fmtDuration(r.p50)}</td>
                  <td className="num">{fmtDuration(r.p95)}</td>
                  <td>
                    {r.signature ? (
                      <code className="sig" title={`${r.name}${r.signature}`}>
                        {r.signature}
                      </code>
                    ) : (
                      <span className="muted">–</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
