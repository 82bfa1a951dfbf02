"""Captured values are JSON-safe, scrubbed, size-capped with visible markers, and capturing never raises."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.events import event

from celery_flow.events import MAX_EVENT_BYTES, encode
from celery_flow.tracking.capture import Capturer
from celery_flow.tracking.scrub import FILTERED, KeyScrubber


def capturer(max_value_size: int = 4096, scrub: bool = True) -> Capturer:
    return Capturer(max_value_size, KeyScrubber() if scrub else None)


def roundtrip(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def test_plain_values_pass_through() -> None:
    c = capturer()
    value = {"a": 1, "b": [1, 2.5, "x", None, True], "c": {"d": "e"}}
    assert c.value(value) == value
    assert c.args((1, "two")) == [1, "two"]
    assert c.kwargs({}) == {}


def test_sensitive_keys_filtered_recursively_in_args_kwargs_results() -> None:
    c = capturer()
    value = {
        "user": "bob",
        "password": "hunter2",
        "nested": [{"api_key": "k", "passenger_count": 3}, {"Authorization": "Bearer x"}],
        "tokenizer": "bert",
        "author": "ann",
    }
    out = c.value(value)
    assert out["password"] == FILTERED
    assert out["nested"][0] == {"api_key": FILTERED, "passenger_count": 3}
    assert out["nested"][1] == {"Authorization": FILTERED}
    assert out["tokenizer"] == "bert"
    assert out["author"] == "ann"
    assert out["user"] == "bob"


def test_scrubbing_off_keeps_values() -> None:
    assert capturer(scrub=False).value({"password": "hunter2"}) == {"password": "hunter2"}


def test_non_json_values_become_readable_strings() -> None:
    c = capturer()
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    ident = uuid.UUID("12345678123456781234567812345678")

    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    out = c.value(
        {
            "when": moment,
            "day": moment.date(),
            "amount": decimal.Decimal("1.10"),
            "id": ident,
            "raw": b"\x00\xffabc",
            "tags": {"x"},
            "pair": (1, 2),
            "obj": Point(),
            "big": 2**80,
            "nan": float("nan"),
            3: "int key",
        }
    )
    assert out["when"] == "2024-01-02T03:04:05+00:00"
    assert out["day"] == "2024-01-02"
    assert out["amount"] == "1.10"
    assert out["id"] == str(ident)
    assert out["raw"] == "b'\\x00\\xffabc'"
    assert out["tags"] == ["x"]
    assert out["pair"] == [1, 2]
    assert out["obj"] == "Point(1, 2)"
    assert out["big"] == str(2**80)
    assert out["nan"] == "nan"
    assert out["3"] == "int key"
    assert roundtrip(out) == out


def test_repr_that_raises_does_not_raise() -> None:
    class Evil:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    out = capturer().value([Evil()])
    assert out == [
        "<unrepresentable test_repr_that_raises_does_not_raise.<locals>.Evil: repr raised RuntimeError>"
    ]


def test_huge_string_is_truncated_with_marker() -> None:
    out = capturer(1000).value("x" * 50_000)
    assert out.startswith("x" * 1000)
    assert out.endswith("…[truncated 49000 chars]")


def test_huge_list_is_truncated_with_marker_element() -> None:
    out = capturer(4096).value(list(range(1_000_000)))
    assert isinstance(out, list)
    assert out[-1].startswith("…[truncated ")
    assert out[-1].endswith(" more items]")
    assert len(out) <= 101


def test_budget_is_shared_across_a_value() -> None:
    out = capturer(2000).value([{"text": "y" * 1500} for _ in range(50)])
    encoded = msgspec.json.encode(out)
    assert len(encoded) < 2000 + 500
    assert "truncated" in encoded.decode()


def test_deep_nesting_and_cycles() -> None:
    deep: Any = []
    cursor = deep
    for _ in range(100):
        cursor.append([])
        cursor = cursor[0]
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    c = capturer()
    assert roundtrip(c.value(deep))  # capped depth, still JSON
    assert c.value(cyclic) == {"name": "loop", "self": "[cycle]"}


def test_exception_text_is_scrubbed() -> None:
    c = capturer()
    assert c.exception(ValueError("bad password=hunter2")) == f"ValueError: bad password={FILTERED}"
    assert c.exception(KeyError()) == "KeyError"


def test_encoded_event_stays_far_below_the_limit() -> None:
    c = capturer()
    hostile = {"blob": b"z" * 10_000_000, "items": [["q" * 100_000] * 1000], "s": "s" * 5_000_000}
    failed = event(
        "failed",
        "t",
        args=c.args((hostile, hostile)),
        kwargs=c.kwargs({"k": hostile}),
        result=c.value(hostile),
        traceback=c.text("T" * 10_000_000, 32_768),
    )
    assert len(encode(failed)) < MAX_EVENT_BYTES / 10


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=5)
        | st.tuples(children, children)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_any_value_captures_to_encodable_json(value: Any) -> None:
    out = capturer(512).value(value)
    encoded = msgspec.json.encode(out)
    assert len(encoded) < 512 * 4
    msgspec.json.decode(encoded)


@pytest.mark.parametrize("size", [64, 512, 4096])
def test_max_value_size_bounds_output(size: int) -> None:
    out = capturer(size).value({"k": ["v" * 10_000 for _ in range(20)]})
    assert len(msgspec.json.encode(out)) < size * 2 + 200


def test_huge_dict_is_capped_without_walking_it() -> None:
    big = {f"k{i}": i for i in range(1_000_000)}
    out = capturer().value(big)
    assert len(out) == 101
    assert out["…"] == "[truncated 999900 more keys]"
