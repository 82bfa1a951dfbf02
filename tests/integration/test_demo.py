"""`celery-flow demo` needs no broker and serves realistic flows within a deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.server_helpers import cli_env, cli_process, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def test_demo_serves_every_kind_of_flow(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with cli_process(
        "demo", "--port", str(port), "--rate", "2", env=cli_env(TMPDIR=str(tmp)), log=log
    ) as proc:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as api:
            wait_for(lambda: api.get("/api/health").status_code == 200, 60, "the demo server")
            assert f"open http://127.0.0.1:{port}/" in log.read_text()

            def flows_named(name: str, state: str) -> list[dict[str, Any]]:
                return list(api.get("/api/flows", params={"name": name, "state": state}).json()["items"])

            def graph_of(name: str, state: str, having: str | None = None) -> dict[str, Any] | None:
                """The newest finished flow rooted at `name` in `state` (with a task named `having`)."""
                for flow in flows_named(name, state):
                    graph: dict[str, Any] = api.get(f"/api/flows/{flow['root_id']}").json()
                    names = {n["name"] for n in graph["nodes"]}
                    finished = all(n["state"] in {"SUCCESS", "FAILURE"} for n in graph["nodes"])
                    if finished and (having is None or having in names):
                        return graph
                return None

            # The pipeline starts with shop.fetch_order too: a checkout is the one that charges a card.
            checkout = wait_for(
                lambda: graph_of("shop.fetch_order", "SUCCESS", having="shop.charge_card"), 90, "a checkout"
            )
            steps = {n["task_id"]: n["name"] for n in checkout["nodes"]}
            chained = [(steps[e["source"]], steps[e["target"]]) for e in checkout["edges"]]
            assert chained == [
                ("shop.fetch_order", "shop.charge_card"),
                ("shop.charge_card", "shop.send_receipt"),
            ]
            assert {e["kind"] for e in checkout["edges"]} == {"chain"}
            charge = next(n for n in checkout["nodes"] if n["name"] == "shop.charge_card")
            detail = api.get(f"/api/tasks/{charge['task_id']}").json()
            assert detail["kwargs"]["password"] != "hunter2"  # scrubbed in the producer

            batch = wait_for(
                lambda: (
                    (g := graph_of("shop.start_batch", "SUCCESS"))
                    and any(x["kind"] == "chord" for x in g["groups"])
                    and g
                ),
                90,
                "a finished batch with a chord",
            )
            assert any(e["kind"] == "chord" for e in batch["edges"])
            failed = wait_for(lambda: graph_of("shop.validate_address", "FAILURE"), 90, "a failed flow")
            assert any(e["kind"] == "errback" for e in failed["edges"])
            health = api.get("/api/health").json()
            assert health["status"] == "ok"
            assert health["transport"]["url"].startswith("memory://")
            assert [p.name.startswith("celery-flow-demo-") for p in tmp.iterdir()] == [True]
        proc.terminate()
        assert proc.wait(30) == 0
    assert list(tmp.iterdir()) == []  # the temporary store is gone
