"""The fingerprint of a failure: which bug it is, whatever its message, line numbers or worker.

    cause("ValueError: card 4242 declined", traceback)
    -> Cause(fingerprint="3f1c0d9a6b2e7c41", exception_type="ValueError", message="card <n> declined")

The key is the exception type plus the traceback's frames, each as (module, function): no line numbers
(an unrelated edit above the raise moves them), no install paths (two workers with different virtualenvs
raise the same bug). Left out, because they wrap every task the same way or vary with the pool:
frames of installed `celery`, `kombu`, `billiard`, `vine` and `celery_flow`, and the standard library's
`threading` and `concurrent.futures`. Frames are taken once each, in first-seen order: a recursion of
any depth, and a traceback cut short by the tracker's size cap (which keeps its head), give the same key.

A retry (`retried` event) reports Celery's `Retry`, whose text names the cause
(`Retry in 10s: ValueError('card 4242 declined')`): its fingerprint is that cause's, so the retries of a
bug and its final failure land in one cluster.

The message is the cluster's title, not part of its key: numbers, hex and uuid ids and quoted values
become `<n>`, `<id>` and `'<s>'`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from typing import Any, Final, NamedTuple

# Installed packages whose frames wrap every task (Celery's tracer, its retry, the pools, ours).
SKIPPED_PACKAGES: Final = frozenset({"celery", "kombu", "billiard", "vine", "celery_flow"})
# Standard library modules (and packages) that wrap code run in threads.
SKIPPED_STDLIB: Final = ("threading", "concurrent.")
# Characters of a fingerprint: 64 bits of a SHA-1.
FINGERPRINT_LENGTH: Final = 16
MAX_TITLE: Final = 200

# Within one line only (no `\s`, which spans lines): a run of blank lines costs linear time.
_FRAME = re.compile(
    r'^[ \t|+\-]*File "(?P<file>[^"\n]+)", line \d+, in (?P<function>\S.*?)[ \t\r]*$', re.MULTILINE
)
_TRUNCATED = re.compile(r"…\[truncated \d+ chars\]\Z")
_INSTALLED = re.compile(r"/(?:site|dist)-packages/")
_STDLIB = re.compile(r"/lib/python\d+(?:\.\d+)?/")
# "Name: message", "module.Name: message" or a bare "Name".
_TYPED = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?\Z", re.DOTALL)
# Celery's Retry text: "Retry in 10s: ValueError('x')" or "Retry at <datetime>: ValueError('x')".
_RETRY = re.compile(r"^Retry (?:in \S+|at .+?): (?P<cause>.*)\Z", re.DOTALL)
_REPR = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)\((?P<args>.*)\)\Z", re.DOTALL)
# A quote opens only after a non-word character: the apostrophe of "can't" opens nothing.
_QUOTED = re.compile(r"(?<!\w)(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})\b")
# Numbers not inside a word ("utf8", "v2" stay), with dotted parts (3.5, 10.0.0.1), units kept ("<n>s").
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d+)*")


class Cause(NamedTuple):
    """What a failure or retry is an instance of: its cluster's key and how the cluster is titled."""

    fingerprint: str
    exception_type: str
    message: str


@functools.lru_cache(maxsize=256)
def cause(exception: str | None, traceback: str | None) -> Cause:
    """The cause of one failure from its event's `exception` text and formatted `traceback`. Cached (a
    failed task is folded again with each later event; 256 tracebacks of at most ~32 KB each)."""
    exception_type, message = split_exception(exception, traceback)
    frames = "\n".join(f"{module}:{function}" for module, function in frames_of(traceback))
    digest = hashlib.sha1(f"{exception_type}\n{frames}".encode(), usedforsecurity=False).hexdigest()
    return Cause(digest[:FINGERPRINT_LENGTH], exception_type, title(message))


def label(exception: str | None, traceback: str | None) -> tuple[str, str]:
    """(exception type, title) of a failure: `cause()` without the key."""
    exception_type, message = split_exception(exception, traceback)
    return exception_type, title(message)


def split_exception(exception: str | None, traceback: str | None) -> tuple[str, str]:
    """(type, message) of an event's exception text, "Name: message" as the tracker sends it (or a repr,
    `Name('message')`); a Retry's cause instead of Retry itself; the traceback's last line when the text
    is missing."""
    text = (exception or "").strip()
    if not text and traceback:
        lines = [line for line in traceback.strip().splitlines() if line and not line[0].isspace()]
        text = lines[-1] if lines and not _TRUNCATED.search(traceback) else ""
    match = _TYPED.match(text)
    if match is None:
        return _from_repr(text, "Exception" if text else "UnknownError")
    exception_type = match["type"].rsplit(".", 1)[-1]
    message = match["message"] or ""
    if exception_type == "Retry":
        retry = _RETRY.match(message)
        if retry is not None:
            exception_type, message = _from_repr(retry["cause"], exception_type)
    return exception_type, message


def _from_repr(text: str, default_type: str) -> tuple[str, str]:
    """(type, message) of an exception's repr, `ValueError('x')` -> ("ValueError", "x")."""
    match = _REPR.match(text.strip())
    if match is None:
        return default_type, text
    args = match["args"]
    if len(args) > MAX_TITLE * 4:
        return match["type"], args
    try:
        values: tuple[Any, ...] = ast.literal_eval(f"({args},)") if args else ()
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return match["type"], args
    if len(values) == 1 and isinstance(values[0], str):
        return match["type"], values[0]
    return match["type"], args


def frames_of(traceback: str | None) -> list[tuple[str, str]]:
    """The (module, function) frames of a formatted traceback that the key holds, once each, in order."""
    if not traceback:
        return []
    if _TRUNCATED.search(traceback):
        # The last line was cut mid-way: only whole lines count.
        traceback = traceback[: traceback.rfind("\n") + 1]
    seen: dict[tuple[str, str], None] = {}
    for match in _FRAME.finditer(traceback):
        module = module_of(match["file"])
        if module is not None:
            seen.setdefault((module, match["function"]), None)
    return list(seen)


def module_of(path: str) -> str | None:
    """A frame's file as a dotted name independent of where it is installed; None for a skipped frame.

    `/venv/lib/python3.11/site-packages/celery/app/trace.py` -> None (Celery's),
    `/usr/lib/python3.11/json/decoder.py` -> `json.decoder`, `/srv/release-42/app/tasks.py` ->
    `app.tasks` (the last two parts of any other path), `<frozen runpy>` stays as it is.
    """
    if path.startswith("<"):
        return path
    path = path.replace("\\", "/")
    installed = list(_INSTALLED.finditer(path))
    stdlib = _STDLIB.search(path)
    if installed:
        relative = path[installed[-1].end() :]
        if relative.split("/", 1)[0] in SKIPPED_PACKAGES:
            return None
    elif stdlib is not None:
        relative = path[stdlib.end() :]
    else:
        relative = "/".join(path.rsplit("/", 2)[-2:])
    module = relative.removesuffix(".py").replace("/", ".")
    if stdlib is not None and not installed and module.startswith(SKIPPED_STDLIB):
        return None
    return module


def title(message: str) -> str:
    """A message with what varies between failures of one bug replaced by placeholders.

    `charge 'a1' failed after 3 tries (order 5f0c9a1e-...)` -> `charge '<s>' failed after <n> tries
    (order <id>)`.
    """
    text = " ".join(message.split())
    if len(text) > 4 * MAX_TITLE:
        text = text[: 4 * MAX_TITLE]
    text = _QUOTED.sub("'<s>'", text)
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    if len(text) > MAX_TITLE:
        text = text[: MAX_TITLE - 1] + "…"
    return text
