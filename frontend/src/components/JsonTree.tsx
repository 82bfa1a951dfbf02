// A collapsible JSON tree. Every value is rendered as React text (never as HTML), so task data such as
// "<img src=x onerror=...>" is shown, not run. Scrubbed ("[Filtered]") and truncated values are marked.
import { useState } from "react";

const FILTERED = /^\[Filtered\]$/;
// The capture layer's markers (tracking/capture.py): "text…[truncated 812 chars]" for a cut string, a
// whole "…[truncated 5 more items]" element for a cut list and "[truncated 3 more keys]" for a cut dict.
const TRUNC_TAIL = /…\[truncated ([^\]]+)\]$/;
const TRUNC_WHOLE = /^…?\[truncated ([^\]]+)\]$/;

function TruncBadge({ what }: { what: string }) {
  return (
    <span className="j-truncbadge" title="cut to the configured max value size (CELERY_FLOW_MAX_VALUE_SIZE)">
      truncated: {what}
    </span>
  );
}

const FOLD_AT = 300;

/** A string, folded to its first 200 characters when long, so one big value does not bury the rest. */
function LongString({ text, cut }: { text: string; cut?: boolean }) {
  const [open, setOpen] = useState(false);
  const quoted = JSON.stringify(text);
  if (text.length <= FOLD_AT || open)
    return (
      <>
        <span className="j-str">{cut ? `${quoted.slice(0, -1)}…` : quoted}</span>
        {open && (
          <button type="button" className="j-more" onClick={() => setOpen(false)}>
            fold
          </button>
        )}
      </>
    );
  return (
    <>
      <span className="j-str">{quoted.slice(0, 200)}…</span>
      <button type="button" className="j-more" onClick={() => setOpen(true)} title="Show the whole value">
        show all {text.length.toLocaleString()} chars
      </button>
    </>
  );
}

function Scalar({ value }: { value: unknown }) {
  if (value === null) return <span className="j-null">null</span>;
  switch (typeof value) {
    case "string": {
      if (FILTERED.test(value))
        return (
          <span className="j-str j-filtered" title="scrubbed in the worker: the value never left the process">
            {JSON.stringify(value)}
          </span>
        );
      const whole = TRUNC_WHOLE.exec(value);
      if (whole) return <TruncBadge what={whole[1]} />;
      const tail = TRUNC_TAIL.exec(value);
      if (tail)
        return (
          <>
            <LongString text={value.slice(0, tail.index)} cut />
            <TruncBadge what={tail[1]} />
          </>
        );
      return <LongString text={value} />;
    }
    case "number":
      return <span className="j-num">{String(value)}</span>;
    case "boolean":
      return <span className="j-bool">{String(value)}</span>;
    default:
      // Never from JSON: undefined (shown as such) or a bigint.
      return <span className="j-str">{typeof value === "bigint" ? value.toString() : typeof value}</span>;
  }
}

function isContainer(v: unknown): v is Record<string, unknown> | unknown[] {
  return typeof v === "object" && v !== null;
}

function Node({ k, value, depth, last }: { k?: string; value: unknown; depth: number; last: boolean }) {
  const [open, setOpen] = useState(depth < 2);
  const key =
    k !== undefined ? (
      <>
        <span className="j-key">{k}</span>
        <span className="j-punct">: </span>
      </>
    ) : null;
  const comma = last ? null : <span className="j-punct">,</span>;
  if (!isContainer(value)) {
    return (
      <div className="j-line">
        {key}
        <Scalar value={value} />
        {comma}
      </div>
    );
  }
  const isArr = Array.isArray(value);
  const entries: [string, unknown][] = isArr
    ? value.map((v, i) => [String(i), v])
    : Object.entries(value);
  const [o, c] = isArr ? ["[", "]"] : ["{", "}"];
  if (entries.length === 0) {
    return (
      <div className="j-line">
        {key}
        <span className="j-punct">
          {o}
          {c}
        </span>
        {comma}
      </div>
    );
  }
  return (
    <div className="j-node">
      <div className="j-line">
        <button
          type="button"
          className="j-toggle"
          aria-expanded={open}
          onClick={() => setOpen(!open)}
          title={open ? "Collapse" : "Expand"}
        >
          {open ? "▾" : "▸"}
        </button>
        {key}
        <span className="j-punct">{o}</span>
        {!open && (
          <>
            <button type="button" className="j-more" onClick={() => setOpen(true)}>
              {entries.length}{" "}
              {isArr ? (entries.length === 1 ? "item" : "items") : entries.length === 1 ? "key" : "keys"}
            </button>
            <span className="j-punct">{c}</span>
            {comma}
          </>
        )}
      </div>
      {open && (
        <>
          <div className="j-children">
            {entries.map(([ck, cv], i) => (
              <Node key={ck} k={isArr ? undefined : ck} value={cv} depth={depth + 1} last={i === entries.length - 1} />
            ))}
          </div>
          <div className="j-line">
            <span className="j-punct">{c}</span>
            {comma}
          </div>
        </>
      )}
    </div>
  );
}

export function JsonTree({ value, label }: { value: unknown; label: string }) {
  if (value === undefined) return <div className="muted">not recorded</div>;
  return (
    <div className="json" aria-label={label}>
      <Node value={value} depth={0} last />
    </div>
  );
}
