"""Ingest through the broker, per store: 1, 2 and 4 `celery-flow consume` processes, SQLite and PostgreSQL.

bench/ingest.py (the store's own benchmark) measures `store.apply()` on both engines and the broker path
for one store per invocation; this runs its `measure_stream` over both stores in one process tree, so the
table compares 1/2/4 consumers and the two engines under the same conditions, with `store.apply()`
alone (no broker, no decode, one process) as the baseline of each engine. Usage:

    python bench/ingest_consumers.py [--stream-flows 2500] [--processes 1,2,4] [--transport redis]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EVENTS_PER_FLOW, stream
from ingest import BROKERS, PgDatabase, measure_apply, measure_stream


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stream-flows", type=int, default=2500, help="flows published (32 events each)")
    parser.add_argument("--batch", type=int, help="consume --batch (default: the command's own)")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--transport", choices=sorted(BROKERS), default="redis")
    args = parser.parse_args()

    events = stream(args.stream_flows, seed=3)
    counts = [int(p) for p in args.processes.split(",")]
    print(f"{args.transport} -> N x `celery-flow consume` -> store; {len(events):,} events "
          f"({args.stream_flows:,} flows x {EVENTS_PER_FLOW}), consume batch {args.batch}")  # fmt: skip
    header = f"{'store':<12} {'apply() baseline':>17}" + "".join(f" {f'{n} consume':>11}" for n in counts)
    print(header + "   (events/s)")
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.stores.split(","):
            row = f"{engine:<12}"

            def url_for(tag: str, engine: str = engine) -> tuple[str, PgDatabase | None]:
                if engine == "postgresql":
                    pg = PgDatabase()
                    return pg.url, pg
                return f"sqlite:///{tmp}/{tag}-{uuid.uuid4().hex[:6]}.db", None

            url, pg = url_for("apply")
            try:
                rate = measure_apply(url, events, args.batch or 500).rate
            finally:
                if pg:
                    pg.drop()
            row += f" {rate:>17,.0f}"
            for n in counts:
                url, pg = url_for(f"stream{n}")
                try:
                    rate, _, _ = measure_stream(args.transport, url, events, n, args.batch)
                finally:
                    if pg:
                        pg.drop()
                row += f" {rate:>11,.0f}"
                print(f"  .. {engine} with {n} consume: {rate:,.0f} events/s", file=sys.stderr, flush=True)
            print(row, flush=True)


if __name__ == "__main__":
    main()
