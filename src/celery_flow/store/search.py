"""Search inside arguments, results and errors: the words and `key:value` pairs of each task, indexed.

What a task is found by (its *tokens*), computed from its fold once, in Python, for both engines:
- the words of every string and number in its args, kwargs and result, and of its exception message:
  runs of letters and digits, lower-cased, at most MAX_TOKEN characters (`ada@example.com` gives `ada`,
  `example`, `com`); not its name (q matches names already) nor dict keys (a pair says more);
- one token per `key:value` pair of a dict anywhere in its args and kwargs (nested dicts, dicts inside
  lists; a list of scalars gives a pair per item): "=" and a 64-bit hash of the lower-cased key and the
  lower-cased value's text, so a value of any length or alphabet is one exact token;
- never a scrubbed value (FILTERED, what tracking/scrub.py writes instead of a secret), and a value
  cut by the size cap (tracking/capture.py's TRUNCATED marker) only up to the marker, less the word the
  cut went through (a fragment is not a word of the value); no pair for a cut value.

Engines: SQLite holds them in an FTS5 table (rowid = the task's `num`; the `ascii` tokenizer splits the
stored text at spaces only, since every token is letters, digits or "=hex"); PostgreSQL in `text[]`
with a GIN index (`@>`: every token present). Both are inverted indexes over exactly the same tokens,
so both engines find the same tasks; neither parses user text: a query is tokenised here and each token
quoted (FTS5) or bound as an array element (PostgreSQL).

A task's tokens are written when they change (`index`, from the write path and the re-fold, usually
twice: when it is sent and when it ends), and deleted with it (`forget`, retention).

A query (`parse`) is words and `key:value` terms, all of which must match. A list walks its usual index
newest first either way: a rare match set (at most SPARSE tasks) is handed to it as a list of task
numbers; a common one is checked row by row as the walk passes (`condition`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

import msgspec

from celery_flow.flow.model import TaskDetail
from celery_flow.store.connection import Session, chunks, in_list, select_in

# What tracking/scrub.py writes instead of a secret, and tracking/capture.py's marks of a value cut by
# the size cap and of a cycle (a unit test checks they match what the tracking library writes).
FILTERED: Final = "[Filtered]"
TRUNCATED: Final = re.compile(r"…\[truncated \d+ (?:chars|bytes|more keys|more items)\]")
CYCLE: Final = "[cycle]"
# The key capture.py gives the note "[truncated N more keys]" in a dict it cut.
TRUNCATED_KEY: Final = "…"

# Characters per token at most: a longer word is several tokens, in the index and in queries alike.
MAX_TOKEN = 64
# Tokens indexed per task at most: bounds the write cost of a task with a huge result.
MAX_TOKENS = 1000
# Terms of a query kept (the rest ignored): every term is one more index lookup.
MAX_TERMS = 32
# A query matching at most this many tasks hands their numbers to the list; more, and the list probes.
SPARSE = 2000

Target = Literal["tasks", "flows"]

_encoder = msgspec.json.Encoder()
_WORD = re.compile(rf"[^\W_]{{1,{MAX_TOKEN}}}")
_ENDS_IN_WORD = re.compile(r"[^\W_]+$")
# What a token or a task number is made of.
_SAFE = re.compile(r"=?[^\W_]+|-?[0-9]+")
# A query term: key:value (each bare or "quoted"), a "quoted phrase", or a bare word.
_TERM = re.compile(r'(?:"([^"]*)"|([^\s":]+)):(?:"([^"]*)"?|(\S+))|"([^"]*)"?|(\S+)')

# -- schema ---------------------------------------------------------------------------------------

# The search index of each engine; schema.ddl() and migration step 4 both include it.
DDL: Final[dict[str, tuple[str, ...]]] = {
    "sqlite": (
        "CREATE VIRTUAL TABLE IF NOT EXISTS task_search USING fts5(tokens, "
        "tokenize = \"ascii tokenchars '='\", detail = none, columnsize = 0)",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS task_search (num BIGINT PRIMARY KEY, tokens TEXT[] NOT NULL)",
        "CREATE INDEX IF NOT EXISTS task_search_tokens ON task_search USING GIN (tokens)",
    ),
}
# The column holding the task number, per engine.
_NUM = {"sqlite": "rowid", "postgresql": "num"}


def dialect(session: Session) -> str:
    """The engine a session talks to: "sqlite" or "postgresql"."""
    return str(session.dialect)


# -- tokens ---------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """`Ada@Example.com, 4711` → `ada`, `example`, `com`, `4711` (a word over MAX_TOKEN characters is
    several, in the index and in queries alike)."""
    return _WORD.findall(text.lower())


def _clean(text: str) -> str:
    """`text` without scrub and cycle marks, and up to a truncation mark, less the word it cut."""
    if "…" in text:
        mark = TRUNCATED.search(text)
        if mark is not None:
            text = _ENDS_IN_WORD.sub("", text[: mark.start()])
    if "[" in text:
        text = text.replace(FILTERED, " ").replace(CYCLE, " ")
    return text


def _value_text(value: Any) -> str | None:
    """The text a `key:value` term compares with (lower case), or None: a value that is not a scalar,
    scrubbed or cut."""
    kind = type(value)
    if kind is str:
        if value == FILTERED or ("…" in value and TRUNCATED.search(value)):
            return None
        return str(value.lower())
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def pair_token(key: str, value: str) -> str:
    """The token of `key:value` (both already lower case): "=" and 16 hex digits."""
    return "=" + hashlib.blake2b(f"{key}\x00{value}".encode(), digest_size=8).hexdigest()


def _walk(value: Any, texts: list[str], pairs: dict[str, None] | None) -> None:
    """Collect the text of every string and number in `value` into `texts`, and, unless `pairs` is
    None, the token of each of its key:value pairs into `pairs`."""
    kind = type(value)
    if kind is str:
        texts.append(_clean(value))
    elif kind is int or kind is float:
        texts.append(str(value))
    elif kind is dict:
        for key, item in value.items():
            if key == TRUNCATED_KEY:
                continue
            if pairs is not None:
                lower = key.lower()
                for scalar in item if type(item) is list else (item,):
                    text = _value_text(scalar)
                    if text is not None:
                        pairs[pair_token(lower, text)] = None
            _walk(item, texts, pairs)
    elif kind is list:
        for item in value:
            _walk(item, texts, pairs)


def _tokens(values: Iterable[Any], pairs: bool) -> list[str]:
    """The words of `values` (one pass of the word pattern over all their text), then their pairs."""
    texts: list[str] = []
    found: dict[str, None] | None = {} if pairs else None
    for value in values:
        _walk(value, texts, found)
    return [*dict.fromkeys(words(" ".join(texts))), *(found or ())]


def _call_tokens(task: TaskDetail) -> list[str]:
    """The tokens of how a task was called: its args and kwargs (fixed once it was sent)."""
    return _tokens((task.args, task.kwargs), pairs=True)


def _outcome_tokens(task: TaskDetail) -> list[str]:
    """The tokens of how it ended: its result and exception message."""
    return _tokens((task.result, task.exception), pairs=False)


def _merged(call: list[str], outcome: list[str]) -> list[str]:
    """The stored form: sorted, distinct, at most MAX_TOKENS (the call's tokens first)."""
    tokens = dict.fromkeys(call)
    tokens.update(dict.fromkeys(outcome))
    if len(tokens) > MAX_TOKENS:
        return sorted(list(tokens)[:MAX_TOKENS])
    return sorted(tokens)


def task_tokens(task: TaskDetail) -> list[str]:
    """Every token `task` is found by, sorted (the stored form, compared to see what changed)."""
    return _merged(_call_tokens(task), _outcome_tokens(task))


def _sources(task: TaskDetail) -> tuple[bytes, bytes]:
    """What `_call_tokens` and `_outcome_tokens` read, encoded: equal sources, equal tokens."""
    return _encoder.encode((task.args, task.kwargs)), _encoder.encode((task.result, task.exception))


class _Indexed(NamedTuple):
    """What was indexed for one task."""

    seq: int  # of the row written with this entry
    call: bytes  # the sources (`_sources`) the tokens came from
    outcome: bytes
    call_tokens: list[str]
    tokens: list[str]  # as stored


class Recent:
    """What this process indexed last for each task, with the `seq` its row was written at: while the
    row still carries that seq, the stored entry is known without reading it, and a fold whose sources
    are unchanged is indexed as it stands."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[int, _Indexed] = {}
        self._lock = threading.Lock()

    def get(self, num: int, seq: int | None) -> _Indexed | None:
        with self._lock:
            entry = self._entries.get(num)
        return entry if entry is not None and entry.seq == seq else None

    def remember(self, entries: Iterable[tuple[int, _Indexed]]) -> None:
        with self._lock:
            cache = self._entries
            for num, entry in entries:
                cache.pop(num, None)
                cache[num] = entry
            while len(cache) > self.size:
                del cache[next(iter(cache))]

    def clear(self) -> None:
        """Forget everything: entries of a transaction that rolled back must never match."""
        with self._lock:
            self._entries.clear()


# -- queries --------------------------------------------------------------------------------------


def parse(text: str) -> list[str]:
    """The tokens a task must all hold to match free text `text` (empty: nothing to search inside).

    Terms: `word` (its words), `"several words"`, `key:value`, `key:"a value"`, `"a key":value`. Keys
    and values compare case-insensitively, a value as a whole (`city:"new york"`); a value starting with
    `//` (a URL such as `s3://bucket/key`) is searched as words. Never raises: a stray quote ends at the
    end of the text, a term with nothing searchable is dropped.
    """
    out: dict[str, None] = {}
    for match in _TERM.finditer(text):
        quoted_key, key, quoted_value, value, _, _ = match.groups()
        key = quoted_key if quoted_key is not None else key
        value = quoted_value if quoted_value is not None else value
        if key is not None and value is not None and value and not value.startswith("//"):
            out[pair_token(key.lower(), value.lower())] = None
        else:
            out.update(dict.fromkeys(words(match.group(0))))
        if len(out) >= MAX_TERMS:
            break
    return list(out)[:MAX_TERMS]


def _pg_array(values: Iterable[str | int], kind: str) -> str:
    """A PostgreSQL array literal. Written into the statement, not bound: a bound array leaves a
    prepared statement's generic plan blind to how many tasks match (a full scan for a rare token).
    Only tokens (letters, digits, "=") and integers ever reach it."""
    items = [str(v) for v in values]
    assert all(_SAFE.fullmatch(item) for item in items)
    return "'{" + ",".join(f'"{item}"' for item in items) + "}'::" + kind  # "null" is a word, not NULL


def _holds(session: Session, tokens: Sequence[str], table: str = "task_search") -> tuple[str, list[Any]]:
    """The condition "this `task_search` row holds every token", and its parameters."""
    if dialect(session) == "postgresql":
        return f"{table}.tokens @> {_pg_array(tokens, 'TEXT[]')}", []
    return "task_search MATCH ?", [" ".join(f'"{t}"' for t in tokens)]


def _probe(session: Session, num: str, tokens: Sequence[str]) -> tuple[str, list[Any]]:
    """True when the task numbered by column `num` holds every token, checked per row as a list's walk
    passes it. PostgreSQL probes its entry by primary key; SQLite, whose FTS5 reads a token's whole
    posting list per probe, reads the matches once into a set (`+` keeps it from driving the query
    instead of the list's own index)."""
    if dialect(session) == "postgresql":
        holds, params = _holds(session, tokens, "x")
        return f"EXISTS (SELECT 1 FROM task_search x WHERE x.num = {num} AND {holds})", params
    holds, params = _holds(session, tokens)
    return f"+{num} IN (SELECT rowid FROM task_search WHERE {holds})", params


def _one_of(session: Session, column: str, values: list[int]) -> tuple[str, list[Any]]:
    """`column` is one of `values` (an array literal in PostgreSQL: a long IN list costs it more to
    plan than to run)."""
    if not values:
        return "1 = 0", []
    if dialect(session) == "postgresql":
        return f"{column} = ANY({_pg_array(values, 'BIGINT[]')})", []
    return f"{column} IN {in_list(values)}", list(values)


def _estimate(session: Session, sql: str, params: list[Any]) -> float:
    """PostgreSQL's estimate of the rows `sql` returns (from its statistics of the tokens, no scan), 0
    in SQLite. Reading a common token's matches to count them would cost PostgreSQL a scan of a share
    of the table; FTS5 reads them in a fraction of a millisecond."""
    if dialect(session) != "postgresql":
        return 0.0
    plan = session.rows("EXPLAIN (FORMAT JSON) " + sql, params)[0][0]
    return float(plan[0]["Plan"]["Plan Rows"])


def condition(session: Session, text: str, target: Target) -> tuple[str, list[Any]] | None:
    """A WHERE condition on `tasks` (or `flows`: those holding a matching task) for free text `text`,
    with its parameters; None when `text` holds nothing to search inside."""
    tokens = parse(text)
    if not tokens:
        return None
    holds, params = _holds(session, tokens)
    column = _NUM[dialect(session)]
    sql = f"SELECT {column} FROM task_search WHERE {holds}"
    common = _estimate(session, sql, params) > 4 * SPARSE
    nums = [] if common else [int(r[0]) for r in session.rows(f"{sql} LIMIT {SPARSE + 1}", params)]
    if not common and len(nums) <= SPARSE:
        if target == "flows":
            nums = sorted(
                {int(r[0]) for r in select_in(session, "SELECT fnum FROM tasks WHERE num IN {}", nums)}
            )
        return _one_of(session, "num" if target == "tasks" else "fnum", nums)
    if target == "tasks":
        return _probe(session, "tasks.num", tokens)
    probe, params = _probe(session, "t.num", tokens)
    return f"EXISTS (SELECT 1 FROM tasks t WHERE t.fnum = flows.fnum AND {probe})", params


# -- writes ---------------------------------------------------------------------------------------


def index(
    session: Session,
    tasks: Sequence[tuple[int, int, TaskDetail]],
    stored: Mapping[int, int],
    recent: Recent | None = None,
) -> None:
    """Index each (num, seq, folded task) whose tokens differ from the stored ones.

    `stored`: the seq of the stored row of each task that may have an entry already (tasks new to the
    store have none, and cost no read). `recent` spares computing the tokens of an unchanged call and
    reading entries this process wrote.
    """
    engine = dialect(session)
    entries: list[tuple[int, _Indexed]] = []
    old: dict[int, list[str]] = {}
    unknown: list[int] = []
    for num, seq, task in tasks:
        call, outcome = _sources(task)
        before = recent.get(num, stored.get(num)) if recent is not None else None
        if before is not None:
            old[num] = before.tokens
            if before.call == call and before.outcome == outcome:
                entries.append((num, before._replace(seq=seq)))
                continue
        elif num in stored:
            unknown.append(num)
        call_tokens = before.call_tokens if before is not None and before.call == call else _call_tokens(task)
        tokens = _merged(call_tokens, _outcome_tokens(task))
        entries.append((num, _Indexed(seq, call, outcome, call_tokens, tokens)))
    if unknown:
        sql = f"SELECT {_NUM[engine]}, tokens FROM task_search WHERE {_NUM[engine]} IN {{}}"
        for num, tokens in select_in(session, sql, unknown):
            old[int(num)] = tokens.split(" ") if isinstance(tokens, str) else list(tokens)
    changed = [(num, entry.tokens) for num, entry in entries if old.get(num, []) != entry.tokens]
    if changed:
        forget(session, [num for num, _ in changed if old.get(num)])
        rows = [(num, tokens) for num, tokens in changed if tokens]
        if engine == "postgresql":
            session.many("INSERT INTO task_search (num, tokens) VALUES (?, ?)", rows)
        else:
            session.many(
                "INSERT INTO task_search (rowid, tokens) VALUES (?, ?)", [(n, " ".join(t)) for n, t in rows]
            )
    if recent is not None:
        recent.remember(entries)


def forget(session: Session, nums: Sequence[int]) -> None:
    """Delete the entries of these task numbers (retention, a re-index)."""
    column = _NUM[dialect(session)]
    for chunk in chunks(nums):
        session.run(f"DELETE FROM task_search WHERE {column} IN {in_list(chunk)}", chunk)
