"""Search inside arguments, results and errors: the words and `key:value` pairs of each task, indexed.

What a task is found by (its *tokens*), computed from its fold once, in Python, for both engines:
- the words of its name, of every string and number in its args, kwargs and result, of the keys of the
  dicts in them, and of its exception message: runs of letters and digits, lower-cased, at most
  MAX_TOKEN characters (`ada@example.com` gives `ada`, `example`, `com`);
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

A query (`parse`) is words and `key:value` terms, all of which must match. A list walks its usual index
newest first either way: a rare match set (at most SPARSE tasks) is handed to it as a list of task
numbers; a common one is probed row by row as the walk passes (`condition`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

from celery_flow.flow.model import TaskDetail
from celery_flow.store.connection import Session, chunks, in_list, select_in

# What tracking/scrub.py writes instead of a secret, and tracking/capture.py's marks of a value cut by
# the size cap and of a cycle (a unit test checks they match what the tracking library writes).
FILTERED: Final = "[Filtered]"
TRUNCATED: Final = re.compile(r"…\[truncated \d+ (?:chars|bytes|more keys|more items)\]")
CYCLE: Final = "[cycle]"
# The key capture.py gives the note "[truncated N more keys]" in a dict it cut.
TRUNCATED_KEY: Final = "…"

# Characters kept of a word (longer ones are cut, in the index and in queries alike).
MAX_TOKEN = 64
# Tokens indexed per task at most: bounds the write cost of a task with a huge result.
MAX_TOKENS = 1000
# Terms of a query kept (the rest ignored): every term is one more index lookup.
MAX_TERMS = 32
# A query matching at most this many tasks hands their numbers to the list; more, and the list probes.
SPARSE = 2000

Target = Literal["tasks", "flows"]

_WORD = re.compile(r"[^\W_]+")
_ENDS_IN_WORD = re.compile(r"[^\W_]+$")
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
    """`Ada@Example.com, 4711` → `ada`, `example`, `com`, `4711`."""
    return [word[:MAX_TOKEN] for word in _WORD.findall(text.lower())]


def _clean(text: str) -> str:
    """`text` without scrub and cycle marks, and up to a truncation mark, less the word it cut."""
    mark = TRUNCATED.search(text)
    if mark is not None:
        text = _ENDS_IN_WORD.sub("", text[: mark.start()])
    if "[" in text:
        text = text.replace(FILTERED, " ").replace(CYCLE, " ")
    return text


def _value_text(value: Any) -> str | None:
    """The text a `key:value` term compares with (lower case), or None: a value that is not a scalar,
    scrubbed or cut."""
    if isinstance(value, str):
        if value == FILTERED or TRUNCATED.search(value):
            return None
        return value.lower()
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def pair_token(key: str, value: str) -> str:
    """The token of `key:value` (both already lower case): "=" and 16 hex digits."""
    return "=" + hashlib.blake2b(f"{key}\x00{value}".encode(), digest_size=8).hexdigest()


class _Tokens:
    """An insertion-ordered set of tokens, full at MAX_TOKENS."""

    def __init__(self) -> None:
        self.seen: dict[str, None] = {}

    def add(self, tokens: Iterable[str]) -> None:
        seen = self.seen
        for token in tokens:
            if len(seen) >= MAX_TOKENS:
                return
            seen[token] = None

    def text(self, text: str) -> None:
        self.add(words(_clean(text)))

    def value(self, value: Any, pairs: bool) -> None:
        """Words of every string, number and key in `value`; its key:value pairs if `pairs`."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.add(words(str(value)))
        elif isinstance(value, dict):
            for key, item in value.items():
                if key == TRUNCATED_KEY:
                    continue
                self.text(key)
                if pairs:
                    self._pairs(key.lower(), item)
                self.value(item, pairs)
        elif isinstance(value, list):
            for item in value:
                self.value(item, pairs)

    def _pairs(self, key: str, value: Any) -> None:
        for item in value if isinstance(value, list) else (value,):
            text = _value_text(item)
            if text is not None:
                self.add((pair_token(key, text),))


def task_tokens(task: TaskDetail) -> list[str]:
    """Every token `task` is found by, sorted (the stored form, compared to see what changed)."""
    tokens = _Tokens()
    if task.name:
        tokens.text(task.name)
    tokens.value(task.args, pairs=True)
    tokens.value(task.kwargs, pairs=True)
    tokens.value(task.result, pairs=False)
    if task.exception:
        tokens.text(task.exception)
    return sorted(tokens.seen)


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


def _matching(session: Session, tokens: Sequence[str]) -> tuple[str, Any]:
    """`SELECT <num> FROM task_search WHERE <every token>` and its one parameter."""
    if dialect(session) == "postgresql":
        return "SELECT num FROM task_search WHERE tokens @> CAST(? AS TEXT[])", list(tokens)
    return "SELECT rowid FROM task_search WHERE task_search MATCH ?", " ".join(f'"{t}"' for t in tokens)


def _probe(session: Session, num: str) -> str:
    """An EXISTS true when the task numbered by column `num` holds every token (one parameter)."""
    if dialect(session) == "postgresql":
        return f"EXISTS (SELECT 1 FROM task_search x WHERE x.num = {num} AND x.tokens @> CAST(? AS TEXT[]))"
    return f"EXISTS (SELECT 1 FROM task_search WHERE task_search MATCH ? AND rowid = {num})"


def condition(session: Session, text: str, target: Target) -> tuple[str, list[Any]] | None:
    """A WHERE condition on `tasks` (or `flows`: those holding a matching task) for free text `text`,
    with its parameters; None when `text` holds nothing to search inside."""
    tokens = parse(text)
    if not tokens:
        return None
    sql, param = _matching(session, tokens)
    nums = [int(r[0]) for r in session.rows(sql + " LIMIT ?", (param, SPARSE + 1))]
    if len(nums) <= SPARSE:
        if target == "tasks":
            return (f"num IN {in_list(nums)}", list(nums)) if nums else ("1 = 0", [])
        fnums = sorted(
            {int(r[0]) for r in select_in(session, "SELECT fnum FROM tasks WHERE num IN {}", nums)}
        )
        return (f"fnum IN {in_list(fnums)}", list(fnums)) if fnums else ("1 = 0", [])
    if target == "tasks":
        return _probe(session, "tasks.num"), [param]
    return f"EXISTS (SELECT 1 FROM tasks t WHERE t.fnum = flows.fnum AND {_probe(session, 't.num')})", [param]


# -- writes ---------------------------------------------------------------------------------------


def index(session: Session, tasks: Sequence[tuple[int, TaskDetail]], stored: Iterable[int]) -> None:
    """Index each (num, folded task) whose tokens differ from the stored ones; `stored`: the numbers
    that may have an entry already (tasks new to the store have none, and cost no read)."""
    fresh = {num: task_tokens(task) for num, task in tasks}
    engine = dialect(session)
    old: dict[int, list[str]] = {}
    maybe = sorted(set(stored) & set(fresh))
    if maybe:
        sql = f"SELECT {_NUM[engine]}, tokens FROM task_search WHERE {_NUM[engine]} IN {{}}"
        for num, tokens in select_in(session, sql, maybe):
            old[int(num)] = tokens.split(" ") if isinstance(tokens, str) else list(tokens)
    changed = [num for num, tokens in fresh.items() if old.get(num, []) != tokens]
    if not changed:
        return
    forget(session, [num for num in changed if num in old])
    rows = [(num, fresh[num]) for num in changed if fresh[num]]
    if engine == "postgresql":
        session.many("INSERT INTO task_search (num, tokens) VALUES (?, ?)", rows)
    else:
        session.many(
            "INSERT INTO task_search (rowid, tokens) VALUES (?, ?)", [(n, " ".join(t)) for n, t in rows]
        )


def forget(session: Session, nums: Sequence[int]) -> None:
    """Delete the entries of these task numbers (retention, a re-index)."""
    column = _NUM[dialect(session)]
    for chunk in chunks(nums):
        session.run(f"DELETE FROM task_search WHERE {column} IN {in_list(chunk)}", chunk)
