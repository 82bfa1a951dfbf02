"""Search inside arguments, results and errors: the words and `key:value` pairs of each task, indexed.

What a task is found by (its *tokens*), computed from its fold, in Python, for both engines:
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
every token present). Both are inverted indexes over exactly the same tokens of each task, so both
engines find the same tasks; neither parses user text: a query is tokenised here and each token quoted (FTS5)
or bound as an array element (PostgreSQL).

Written behind the fold, not in its transaction (`Indexer`): the fold hands each task row it writes
(num, seq, the task's args, kwargs, result and exception) to its store's `Handoff`; the indexer, run by
each consumer every INDEX_INTERVAL seconds (`SqlStore.index_search`, consumer.py's housekeeping), reads
the rows written since its watermark (meta 'search_seq') in `seq` order, as the live feed does, up to
INDEX_BATCH per short write transaction, and indexes each as it stands then: a task that changed in many
batches since is indexed once. A consumer leaves the rows of the last INDEX_SETTLE seconds to its next
run, so most tasks are indexed once, when they have ended. Sources not handed over (another process's
fold, a restart, a migrated store) are folded again from the task's stored events. So a task is
findable about 2 x INDEX_INTERVAL seconds after it is stored at most while the indexer keeps up, and
`/api/health` shows how far behind the index is (store.search_lag, in change numbers). The re-fold
(store/backfill.py) keeps rows' seq and changes no tokens; a migrated store's index is filled by the
indexer starting from seq 0.

A task's entry is up to two rows: its call's tokens (part 0), written when it is indexed while still
running, and all its tokens (part 1) once its outcome adds any, beside the first if stored already,
else alone; so a task's usual life writes each row once and deletes nothing; a task matches when one
of its rows holds every token of a query (the full row holds the call row's tokens: that is when its
tokens do). PostgreSQL, where a delete costs little (FTS5 writes one per token), deletes the call row
then. Row key: SQLite's rowid `num * 2 + part`, PostgreSQL's (num, part). Rows are written when their
tokens change and deleted with the task (`forget`, retention).

A query (`parse`) is words and `key:value` terms, all of which must match. A list walks its usual index
newest first either way: a rare match set (at most SPARSE tasks) is handed to it as a list of task
numbers; a common one is checked row by row as the walk passes (`condition`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

import msgspec

from celery_flow.events import Event
from celery_flow.flow.fold import fold_task
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
# Task rows the indexer reads per transaction at most (one transaction holds the writers' lock briefly).
INDEX_BATCH = 2000
# Seconds between a consumer's indexer runs: about how long a stored task waits to be findable.
INDEX_INTERVAL = 1.0
# Seconds one indexer run goes on at most while it is behind (the next run resumes).
INDEX_BUDGET = 0.5
# Seconds a consumer's indexer leaves the newest rows alone (it indexes up to the change counter one of
# its runs saw at least this long ago): most tasks end meanwhile and are indexed once, as they ended.
INDEX_SETTLE = 0.5
# Rows whose sources the fold hands to the indexer, and entries the indexer remembers, at most.
HANDOFF = 16384
RECENT = 4096

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
    """The token of `key:value` (both already lower case): "=" and 16 hex digits (`_pair_of` computes the
    same, cached)."""
    return "=" + hashlib.blake2b(f"{key}\x00{value}".encode(), digest_size=8).hexdigest()


# Pair tokens computed lately, by "key\x00value" (a string key: a tuple would be one more object for the
# garbage collector to track per pair): most pairs recur (a country, a flag, a status), and a hash costs
# more than a look-up. Emptied when full.
_pair_tokens: dict[str, str] = {}
_PAIR_TOKENS_MAX = 65536


def _pair_of(both: str) -> str:
    """The token of "key\x00value" (`pair_token`), from the cache or computed into it."""
    token = _pair_tokens.get(both)
    if token is None:
        if len(_pair_tokens) >= _PAIR_TOKENS_MAX:
            _pair_tokens.clear()
        token = _pair_tokens[both] = "=" + hashlib.blake2b(both.encode(), digest_size=8).hexdigest()
    return token


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
            if kind is str:
                if "…" in item or "[" in item:
                    texts.append(_clean(item))
                    text = _value_text(item)
                else:
                    texts.append(item)
                    text = item.lower()
            elif kind is int:
                text = str(item)
                texts.append(text)
            elif kind is dict:
                _walk(item, texts, pairs)
                continue
            elif kind is list:
                if pairs is not None:
                    lower = key.lower()
                    for scalar in item:
                        text = _value_text(scalar)
                        if text is not None:
                            pairs[_pair_of(f"{lower}\x00{text}")] = None
                _walk(item, texts, pairs)
                continue
            else:
                if kind is float:
                    texts.append(str(item))
                text = _value_text(item)
            if pairs is not None and text is not None:
                pairs[_pair_of(f"{key.lower()}\x00{text}")] = None
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
    passes it. PostgreSQL probes its rows by primary key; SQLite, whose FTS5 reads a token's whole
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
    sql = f"SELECT DISTINCT {_NUM[dialect(session)]} FROM task_search WHERE {holds}"
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


_Rows = tuple[tuple[str, ...], tuple[str, ...]]  # a task's call row and full row (empty: no row)
_NO_ROWS: _Rows = ((), ())


class Sources(NamedTuple):
    """What a task's tokens come from: its fold's arguments, result and exception message."""

    args: Any
    kwargs: Any
    result: Any
    exception: str | None

    @classmethod
    def of(cls, task: TaskDetail) -> Sources:
        return cls(task.args, task.kwargs, task.result, task.exception)


# The sources of a row with nothing to index (a planned step: store/plan.py).
NOTHING: Final = Sources(None, None, None, None)


class _Indexed(NamedTuple):
    """What the indexer wrote for one task: its sources (the very same objects when the fold read cached
    events: unchanged without comparing them), their tokens, and its rows as stored."""

    sources: Sources
    call_tokens: tuple[str, ...]
    outcome_tokens: tuple[str, ...]
    rows: _Rows


def _unchanged(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two sources give the same tokens: the same objects, or equal encodings (`==` alone would
    take 1 for True)."""
    if all(x is y for x, y in zip(a, b, strict=True)):
        return True
    return bool(_encoder.encode(a) == _encoder.encode(b))


def _full_row(call: tuple[str, ...], outcome_tokens: tuple[str, ...]) -> tuple[str, ...]:
    """The call's and the outcome's tokens, sorted, at most MAX_TOKENS (the call's first); none when the
    outcome adds no token (the call row holds them all)."""
    held = set(call)
    more = [t for t in outcome_tokens if t not in held]
    if not more:
        return ()
    return tuple(sorted(call + tuple(more[: MAX_TOKENS - len(call)])))


class Handoff:
    """The sources of the rows this process's fold wrote lately, by task number with the row's `seq`:
    the indexer takes them instead of reading and folding a task's events again (while the row still
    carries that seq, nobody changed the task since)."""

    def __init__(self, size: int = HANDOFF) -> None:
        self.size = size
        # num: (seq, sources as a plain tuple: one per task written, the cheapest to build)
        # Oldest first: OrderedDict drops its oldest in O(1) (write.py's RecentEvents says why not a dict).
        self._entries: OrderedDict[int, tuple[int, tuple[Any, Any, Any, str | None]]] = OrderedDict()
        self._lock = threading.Lock()

    def hand(self, nums: Sequence[int], seqs: Sequence[int], tasks: Sequence[TaskDetail] | None) -> None:
        """Hand over the sources of rows written in the caller's transaction: task nums[i], written at
        seqs[i], folded as tasks[i] (None: rows with nothing to index, planned steps)."""
        with self._lock:
            entries = self._entries
            pop = entries.pop
            if tasks is None:
                for num, seq in zip(nums, seqs, strict=True):
                    pop(num, None)
                    entries[num] = (seq, NOTHING)
            else:
                for num, seq, t in zip(nums, seqs, tasks, strict=True):
                    pop(num, None)  # re-insert: the oldest first, dropped first when full
                    entries[num] = (seq, (t.args, t.kwargs, t.result, t.exception))
            while len(entries) > self.size:
                entries.popitem(last=False)

    def take(self, num: int, seq: int) -> Sources | None:
        """The sources handed over for this row (None: not by this process, or not at this seq)."""
        with self._lock:
            hit = self._entries.pop(num, None)
        return Sources(*hit[1]) if hit is not None and hit[0] == seq else None

    def clear(self) -> None:
        """Forget everything: rows of a transaction that rolled back must never match."""
        with self._lock:
            self._entries.clear()


class Indexer:
    """Writes the search index behind the fold, following the tasks' change numbers (see the module's
    docstring); a store has one, driven by `SqlStore.index_search` under the store's write lock."""

    def __init__(self, handoff: Handoff, size: int = RECENT) -> None:
        self.handoff = handoff
        self.size = size
        # What this process wrote for each task lately, valid while nobody else indexed since: the
        # watermark it committed last (`_done`) is still the stored one.
        self._recent: OrderedDict[int, _Indexed] = OrderedDict()
        self._done: int | None = None
        # (monotonic time, change counter) as this process's runs saw them, oldest first (`settled`).
        self._heads: list[tuple[float, int]] = []

    def reset(self) -> None:
        """Forget what was written: after a transaction that rolled back."""
        self._recent.clear()
        self._done = None

    def settled(self, head: int, settle: float, now: float) -> int:
        """The change counter to index up to at `now` (monotonic): `head`, or with `settle`, the newest
        one a run saw at least `settle` seconds ago (0 if none did: this process's first run)."""
        if not settle:
            return head
        heads = self._heads
        heads.append((now, head))
        old = [i for i, (seen, _) in enumerate(heads) if seen <= now - settle]
        if not old:
            return 0
        del heads[: old[-1]]  # older ones than the newest old one are never needed again
        return heads[0][1]

    def step(
        self, session: Session, head: int, settle: float = 0.0, now: float = 0.0, limit: int = INDEX_BATCH
    ) -> tuple[int, int]:
        """Index the task rows written after the stored watermark (meta 'search_seq'), at most `limit`,
        in the caller's write transaction, `head` the change counter (every row up to it committed:
        writers are serialized), held back by `settle` seconds (`settled`); return (rows indexed, seq
        still behind the counter indexed up to)."""
        head = self.settled(head, settle, now)
        state = {str(k): int(v) for k, v in session.rows(_STATE_SELECT)}
        if len(state) < len(_STATE_KEYS):
            session.many(_STATE_INSERT, [(key,) for key in _STATE_KEYS if key not in state])
        done, top = state.get("search_seq", 0), state.get("search_num", 0)
        if done != self._done:
            self._recent.clear()  # another process indexed since (or this one just started)
        rows = session.rows(
            "SELECT num, seq, task_id FROM tasks WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (done, head, limit),
        )
        upto = max(done, head if len(rows) < limit else int(rows[-1][1]))
        tasks: list[tuple[int, Sources]] = []
        missing: dict[int, str] = {}
        for num, seq, task_id in rows:
            sources = self.handoff.take(int(num), int(seq))
            if sources is None:
                missing[int(num)] = str(task_id)
            else:
                tasks.append((int(num), sources))
        if missing:
            tasks += _refold(session, missing)
        if tasks:
            self._write(session, tasks, top)
            top = max(top, max(num for num, _ in tasks))
        session.many("UPDATE meta SET value = ? WHERE key = ?", [(upto, "search_seq"), (top, "search_num")])
        self._done = upto
        return len(rows), max(0, head - upto)

    def _write(self, session: Session, tasks: list[tuple[int, Sources]], top: int) -> None:
        """Write the rows of each (num, sources) whose tokens differ from the stored ones; `top`: the
        highest task number indexed before (a higher one has no entry to read)."""
        recent = self._recent
        pending: list[tuple[int, _Indexed, _Rows | None]] = []  # (num, new entry, stored rows; None: read)
        for num, sources in tasks:
            before = recent.pop(num, None)
            if before is not None and _unchanged(before.sources[:2], sources[:2]):
                if _unchanged(before.sources[2:], sources[2:]):
                    recent[num] = _Indexed(sources, *before[1:])
                    continue
                call_tokens = before.call_tokens
            else:
                call_tokens = tuple(_tokens(sources[:2], pairs=True))
            if sources.result is None and not sources.exception:
                outcome_tokens: tuple[str, ...] = ()
            else:
                outcome_tokens = tuple(_tokens(sources[2:], pairs=False))
            call_row = tuple(sorted(call_tokens[:MAX_TOKENS]))
            rows = (call_row, _full_row(call_row, outcome_tokens))
            entry = _Indexed(sources, call_tokens, outcome_tokens, rows)
            have = before.rows if before is not None else (None if num <= top else _NO_ROWS)
            pending.append((num, entry, have))
        unknown = [num for num, _, have in pending if have is None]
        old: dict[int, list[tuple[str, ...]]] = {}
        if unknown:
            if dialect(session) == "postgresql":
                sql = "SELECT num * 2 + part, tokens FROM task_search WHERE num IN {}"
                keys = unknown
            else:
                sql = "SELECT rowid, tokens FROM task_search WHERE rowid IN {}"
                keys = [n * 2 + part for n in unknown for part in (0, 1)]
            for key, tokens in select_in(session, sql, keys):
                row = tuple(tokens.split(" ") if isinstance(tokens, str) else tokens)
                old.setdefault(int(key) // 2, [(), ()])[int(key) % 2] = row
        postgresql = dialect(session) == "postgresql"
        deletes: list[int] = []
        inserts: list[tuple[int, int, tuple[str, ...]]] = []
        for num, entry, have in pending:
            had = have if have is not None else tuple(old.get(num, _NO_ROWS))
            call_row, full_row = entry.rows
            if full_row and (postgresql or not had[0]):
                # One row per task unless its call row is stored already (FTS5 deletes cost a write per
                # token; PostgreSQL's little, and a query then reads one row per task).
                entry = _Indexed(*entry[:3], ((), full_row))
            for part, (want, was) in enumerate(zip(entry.rows, had, strict=True)):
                if want != was:
                    if was:
                        deletes.append(num * 2 + part)
                    if want:
                        inserts.append((num, part, want))
            recent[num] = entry
        while len(recent) > self.size:
            recent.popitem(last=False)
        if deletes:
            _delete(session, deletes)
        if inserts:
            if postgresql:
                # Each array as its literal (tokens need no escaping): adapting a Python list costs more.
                session.many(
                    "INSERT INTO task_search (num, part, tokens) VALUES (?, ?, ?)",
                    [(num, part, '{"' + '","'.join(tokens) + '"}') for num, part, tokens in inserts],
                )
            else:
                session.many(
                    "INSERT INTO task_search (rowid, tokens) VALUES (?, ?)",
                    [(num * 2 + part, " ".join(tokens)) for num, part, tokens in inserts],
                )


_STATE_KEYS: Final = ("search_seq", "search_num")
_STATE_SELECT: Final = "SELECT key, value FROM meta WHERE key IN ('search_seq', 'search_num')"
_STATE_INSERT: Final = "INSERT INTO meta (key, value) VALUES (?, 0) ON CONFLICT (key) DO NOTHING"
_event_decoder = msgspec.json.Decoder(Event)


def _refold(session: Session, missing: Mapping[int, str]) -> list[tuple[int, Sources]]:
    """The sources of tasks (num: task id) no fold of this process handed over, folded again from their
    stored events (a row without events, a planned step, has nothing to index)."""
    events: dict[int, list[Event]] = {}
    for num, data in select_in(session, "SELECT num, data FROM events WHERE num IN {}", sorted(missing)):
        events.setdefault(int(num), []).append(_event_decoder.decode(data))
    return [(num, Sources.of(fold_task(missing[num], stored))) for num, stored in events.items()]


def _delete(session: Session, keys: Sequence[int]) -> None:
    """Delete these rows (`num * 2 + part`)."""
    if dialect(session) == "postgresql":
        for part in (0, 1):
            nums = sorted(k // 2 for k in keys if k % 2 == part)
            if nums:  # one short statement, the same each time (PostgreSQL plans it once)
                session.run("DELETE FROM task_search WHERE part = ? AND num = ANY(?)", (part, nums))
        return
    for chunk in chunks(sorted(keys)):
        session.run(f"DELETE FROM task_search WHERE rowid IN {in_list(chunk)}", chunk)


def forget(session: Session, nums: Sequence[int]) -> None:
    """Delete the entries of these task numbers (retention, a re-index)."""
    if dialect(session) == "postgresql":
        for chunk in chunks(nums):
            session.run(f"DELETE FROM task_search WHERE num IN {in_list(chunk)}", chunk)
    else:
        _delete(session, [n * 2 + part for n in nums for part in (0, 1)])
