"""The search tokeniser and query parser (store/search.py): what a task is found by, and what a query asks."""

from __future__ import annotations

import pytest

from celery_flow.flow.model import TaskDetail
from celery_flow.store.search import (
    CYCLE,
    FILTERED,
    MAX_TERMS,
    MAX_TOKEN,
    MAX_TOKENS,
    TRUNCATED,
    TRUNCATED_KEY,
    pair_token,
    parse,
    task_tokens,
    words,
)
from celery_flow.tracking.capture import Capturer, truncate_text
from celery_flow.tracking.scrub import FILTERED as SCRUBBED
from celery_flow.tracking.scrub import KeyScrubber


def tokens_of(**fields: object) -> set[str]:
    return set(task_tokens(TaskDetail(task_id="t", name="app.tasks.charge", state="SUCCESS", **fields)))  # type: ignore[arg-type]


def test_words_are_lower_case_runs_of_letters_and_digits() -> None:
    assert words("Ada@Example.com, 4711 order_id Ünïcode") == [
        "ada",
        "example",
        "com",
        "4711",
        "order",
        "id",
        "ünïcode",
    ]
    assert words("x" * 100) == ["x" * MAX_TOKEN, "x" * (100 - MAX_TOKEN)]


def test_markers_are_the_ones_the_tracking_library_writes() -> None:
    capture = Capturer(64, KeyScrubber())
    assert FILTERED == SCRUBBED
    assert capture.value({"password": "hunter2"}) == {"password": FILTERED}
    assert TRUNCATED.search(truncate_text("a" * 100, 64))
    assert TRUNCATED.search(capture.value(b"b" * 100))
    cut = capture.value({f"k{i}": i for i in range(200)})
    assert TRUNCATED_KEY in cut
    assert TRUNCATED.search(TRUNCATED_KEY + cut[TRUNCATED_KEY])
    items = capture.value(list(range(200)))
    assert TRUNCATED.search(items[-1])
    looped: list[object] = []
    looped.append(looped)
    assert capture.value(looped) == [CYCLE]


def test_a_task_is_found_by_the_words_of_its_arguments_result_and_error() -> None:
    tokens = tokens_of(
        args=[4711, "s3://bucket/key"],
        kwargs={"email": "ada@example.com", "amount": 12.5},
        result={"receipt": "R-99"},
        exception="ValueError: card declined",
    )
    assert {"4711", "s3", "bucket", "key", "ada", "example", "com", "12", "5", "r", "99"} <= tokens
    assert {"valueerror", "card", "declined"} <= tokens
    # Keys and the task's name are not words of it (a name is matched by q as a name already).
    assert not {"email", "amount", "receipt", "app", "charge"} & tokens


def test_key_value_pairs_at_any_depth_of_args_and_kwargs_but_not_of_the_result() -> None:
    tokens = tokens_of(
        args=[{"tenant": "Acme"}],
        kwargs={
            "customer_id": 4711,
            "order": {"shipping": {"city": "New York"}, "items": [{"sku": "X-1"}, {"sku": "Y-2"}]},
            "tags": ["red", "blue"],
            "active": True,
            "coupon": None,
            "total": 10.0,
        },
        result={"status": "done"},
    )
    for key, value in [
        ("tenant", "acme"), ("customer_id", "4711"), ("city", "new york"), ("sku", "x-1"), ("sku", "y-2"),
        ("tags", "red"), ("tags", "blue"), ("active", "true"), ("coupon", "null"), ("total", "10"),
    ]:  # fmt: skip
        assert pair_token(key, value) in tokens, (key, value)
    assert pair_token("status", "done") not in tokens
    # A dict value gives no pair of its own, only its members do.
    assert not any(t == pair_token("order", "{}") for t in tokens)


def test_scrubbed_values_are_never_tokens() -> None:
    tokens = tokens_of(
        kwargs={"password": FILTERED, "user": "ada"},
        exception=f"login failed: password={FILTERED} for ada",
    )
    assert "filtered" not in tokens
    assert pair_token("password", FILTERED.lower()) not in tokens
    assert pair_token("user", "ada") in tokens


def test_a_cut_value_is_indexed_up_to_the_cut_less_the_word_it_went_through() -> None:
    cut = truncate_text("alpha beta gammadelta", 14)  # "alpha beta gam…[truncated 7 chars]"
    tokens = tokens_of(
        kwargs={
            "note": cut,
            "rest": [1, "…[truncated 5 more items]"],
            TRUNCATED_KEY: "[truncated 3 more keys]",
        }
    )
    assert {"alpha", "beta"} <= tokens
    assert not {"gam", "truncated", "chars", "more", "items", "keys"} & tokens
    assert pair_token("note", cut.lower()) not in tokens


def test_tokens_per_task_are_capped() -> None:
    assert len(tokens_of(result=[f"w{i}" for i in range(MAX_TOKENS * 2)])) == MAX_TOKENS


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ada", ["ada"]),
        ("ada@example.com", ["ada", "example", "com"]),
        ("4711 Ada", ["4711", "ada"]),
        ("customer_id:4711", [pair_token("customer_id", "4711")]),
        ("Country:DE", [pair_token("country", "de")]),
        ('city:"New York"', [pair_token("city", "new york")]),
        ('"first name":Ada', [pair_token("first name", "ada")]),
        ('"new york"', ["new", "york"]),
        ("a:b:c", [pair_token("a", "b:c")]),
        ("s3://bucket/key", ["s3", "bucket", "key"]),
        ("ada country:DE", ["ada", pair_token("country", "de")]),
    ],
)
def test_parse(query: str, expected: list[str]) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    "query",
    ['"', '""', ':', '::', 'key:', ':value', '"unbalanced', 'city:"New', '"*^():-', "AND OR NOT NEAR", "\x00",
     "' OR 1=1 --", "%s ? $1", "a" * 512, "é" * 600, "key:" + '"' * 50],
)  # fmt: skip
def test_parse_never_raises_and_yields_only_plain_tokens(query: str) -> None:
    tokens = parse(query)
    assert len(tokens) <= MAX_TERMS
    for token in tokens:
        assert token
        assert '"' not in token
        assert " " not in token
        assert token.startswith("=") or token.isalnum()


def test_parse_keeps_at_most_max_terms() -> None:
    assert len(parse(" ".join(f"w{i}" for i in range(100)))) == MAX_TERMS
