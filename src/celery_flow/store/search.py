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

Engines: SQLite holds them in an FTS5 table (the `ascii` tokenizer splits the stored text at spaces
only, since every token is letters, digits or "=hex"); PostgreSQL in `text[]` with a GIN index (`@>`:
every token present). Both are inverted indexes over exactly the same rows of tokens, so both engines
find the same tasks; neither parses user text: a query is tokenised here and each token quoted (FTS5)
or bound as an array element (PostgreSQL).

A task's entry is one or two rows (`index`): its call's tokens (part 0), written when it is sent, and
once it has an outcome, all its tokens (part 1), added beside it; a task matches when one of its rows
holds every token of a query. Row key: SQLite's rowid `num * 2 + part`, PostgreSQL's (num, part).
Rows are written when they change (from the write path and the re-fold) and deleted with the task
(`forget`, retention).

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
        "CREATE TABLE IF NOT EXISTS task_search "
        "(num BIGINT NOT NULL, part SMALLINT NOT NULL, tokens TEXT[] NOT NULL, PRIMARY KEY (num, part))",
        "CREATE INDEX IF NOT EXISTS task_search_tokens ON task_search USING GIN (tokens)",
    ),
}
# The task number of an index row, per engine (SQLite's rowid is `num * 2 + part`).
_NUM = {"sqlite": "rowid >> 1", "postgresql": "num"}


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


# Pair tokens computed lately: most pairs recur (a country, a flag, a status), and a hash costs more
# than a look-up. Emptied when full.
_pair_tokens: dict[tuple[str, str], str] = {}
_PAIR_TOKENS_MAX = 65536


def _pair(pairs: dict[str, None], key: str, value: Any) -> None:
    """Add the token of `key` (lower case) and scalar `value` to `pairs`, if it has one."""
    if type(value) is str and "…" not in value and value != FILTERED:
        text: str | None = value.lower()
    else:
        text = _value_text(value)
    if text is None:
        return
    token = _pair_tokens.get((key, text))
    if token is None:
        if len(_pair_tokens) >= _PAIR_TOKENS_MAX:
            _pair_tokens.clear()
        token = _pair_tokens[key, text] = pair_token(key, text)
    pairs[token] = None


def _walk(value: Any, texts: list[str], pairs: dict[str, None] | None) -> None:
    """Collect the text of every string and number in `value` into `texts`, and, unless `pairs` is
    None, the token of each of its key:value pairs into `pairs`. (Scalars inside a dict or list are
    handled in its loop: most values are scalars, and a call per value costs more than the value.)"""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if key == TRUNCATED_KEY:
                continue
            kind = type(item)
            if pairs is not None:
                lower = key.lower()
                if kind is list:
                    for scalar in item:
                        _pair(pairs, lower, scalar)
                else:
                    _pair(pairs, lower, item)
            if kind is str:
                texts.append(_clean(item) if "…" in item or "[" in item else item)
            elif kind is int or kind is float:
                texts.append(str(item))
            elif kind is dict or kind is list:
                _walk(item, texts, pairs)
        return
    for item in value if kind is list else (value,):
        kind = type(item)
        if kind is str:
            texts.append(_clean(item) if "…" in item or "[" in item else item)
        elif kind is int or kind is float:
            texts.append(str(item))
        elif kind is dict or kind is list:
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


_Sources = tuple[Any, Any]  # what a part's tokens come from: (args, kwargs) or (result, exception)
_Rows = tuple[list[str] | None, list[str] | None]  # a task's call row and full row (None: no row)


class _Indexed(NamedTuple):
    """What was indexed for one task: its rows as stored, and what their tokens came from."""

    seq: int  # of the task row written with this entry
    call: _Sources  # the fold's own objects: unchanged when the very same
    outcome: _Sources
    call_tokens: list[str]
    outcome_tokens: list[str]
    rows: _Rows  # as stored


def _same(a: _Sources, b: _Sources) -> bool:
    """Whether two sources give the same tokens: the same objects (a fold of cached events), else equal
    encodings (`==` alone would take 1 for True)."""
    if a[0] is b[0] and a[1] is b[1]:
        return True
    return bool(_encoder.encode(a) == _encoder.encode(b))


def _rows(call_tokens: list[str], outcome_tokens: list[str], stored: _Rows) -> _Rows:
    """The rows a task's entry should have: its call row (the call's tokens, sorted) until it has an
    outcome, then its full row (call and outcome, `_merged`); a call row already stored stays beside
    the full row (rewriting nothing), any other call row is not written."""
    call = sorted(call_tokens[:MAX_TOKENS]) or None
    full = _merged(call_tokens, outcome_tokens) if outcome_tokens else None
    if full is None or full == call:
        return call, None
    return (call if stored[0] == call else None), full


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
    return f"+{num} IN (SELECT rowid >> 1 FROM task_search WHERE {holds})", params


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
    sql = f"SELECT DISTINCT {column} FROM task_search WHERE {holds}"
    common = _estimate(session, sql.replace("DISTINCT ", ""), params) > 4 * SPARSE
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
    store have none, and cost no read). `recent` spares computing the tokens of an unchanged call or
    outcome and reading entries this process wrote.

    A task's entry is one or two rows (`_rows`): the tokens of its call, written when it is sent, and
    once it has an outcome, a row of all its tokens, added beside the first; so the usual lifecycle
    writes each row once, and never deletes. A task matches when one of its rows holds every token of a
    query, which is when its tokens do, as the full row holds the call row's tokens.
    """
    engine = dialect(session)
    pending: list[
        tuple[int, int, tuple[Any, Any], tuple[Any, Any], list[str], list[str], _Indexed | None]
    ] = []
    entries: list[tuple[int, _Indexed]] = []
    unknown: list[int] = []
    for num, seq, task in tasks:
        call, outcome = (task.args, task.kwargs), (task.result, task.exception)
        before = recent.get(num, stored.get(num)) if recent is not None else None
        if before is None:
            if num in stored:
                unknown.append(num)
            pending.append((num, seq, call, outcome, _call_tokens(task), _outcome_tokens(task), None))
            continue
        same_call, same_outcome = _same(before.call, call), _same(before.outcome, outcome)
        if same_call and same_outcome:
            entries.append((num, before._replace(seq=seq, call=call, outcome=outcome)))
            continue
        call_tokens = before.call_tokens if same_call else _call_tokens(task)
        outcome_tokens = before.outcome_tokens if same_outcome else _outcome_tokens(task)
        pending.append((num, seq, call, outcome, call_tokens, outcome_tokens, before))
    old: dict[int, _Rows] = {}
    if unknown:
        if engine == "postgresql":
            sql = "SELECT num * 2 + part, tokens FROM task_search WHERE num IN {}"
            keys: list[int] = unknown
        else:
            sql = "SELECT rowid, tokens FROM task_search WHERE rowid IN {}"
            keys = [n * 2 + part for n in unknown for part in (0, 1)]
        for key, tokens in select_in(session, sql, keys):
            row = tokens.split(" ") if isinstance(tokens, str) else list(tokens)
            call_row, full_row = old.get(int(key) // 2, (None, None))
            old[int(key) // 2] = (row, full_row) if int(key) % 2 == 0 else (call_row, row)
    deletes: list[int] = []
    inserts: list[tuple[int, int, list[str]]] = []
    for num, seq, call, outcome, call_tokens, outcome_tokens, before in pending:
        now = before.rows if before is not None else old.get(num, (None, None))
        rows = _rows(call_tokens, outcome_tokens, now)
        for part, (want, have) in enumerate(zip(rows, now, strict=True)):
            if want != have:
                if have:
                    deletes.append(num * 2 + part)
                if want:
                    inserts.append((num, part, want))
        entries.append((num, _Indexed(seq, call, outcome, call_tokens, outcome_tokens, rows)))
    if deletes:
        _delete(session, deletes)
    if inserts:
        if engine == "postgresql":
            session.many("INSERT INTO task_search (num, part, tokens) VALUES (?, ?, ?)", inserts)
        else:
            session.many(
                "INSERT INTO task_search (rowid, tokens) VALUES (?, ?)",
                [(num * 2 + part, " ".join(tokens)) for num, part, tokens in inserts],
            )
    if recent is not None:
        recent.remember(entries)


def _delete(session: Session, keys: Sequence[int]) -> None:
    """Delete these rows (`num * 2 + part`)."""
    postgresql = dialect(session) == "postgresql"
    for chunk in chunks(sorted(keys)):
        if postgresql:
            pairs = ", ".join("(?, ?)" for _ in chunk)
            session.run(
                f"DELETE FROM task_search WHERE (num, part) IN ({pairs})",
                [v for k in chunk for v in (k // 2, k % 2)],
            )
        else:
            session.run(f"DELETE FROM task_search WHERE rowid IN {in_list(chunk)}", chunk)


def forget(session: Session, nums: Sequence[int]) -> None:
    """Delete the entries of these task numbers (retention, a re-index)."""
    if dialect(session) == "postgresql":
        for chunk in chunks(nums):
            session.run(f"DELETE FROM task_search WHERE num IN {in_list(chunk)}", chunk)
    else:
        _delete(session, [n * 2 + part for n in nums for part in (0, 1)])
