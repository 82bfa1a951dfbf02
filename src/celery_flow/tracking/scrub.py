"""Which keys and text fragments hold secrets, decided precisely enough to trust in both directions.

A key is compared as a whole normalised name (lower case, `-`/space/camelCase → `_`), and by its trailing
words, so `password`, `db_password`, `X-Api-Key`, `authToken` are sensitive while `passenger_count`,
`tokenizer` and `author` are not: substrings never count. Free text (exception messages, tracebacks)
is scrubbed by patterns: `key=value` / `key: value` with a sensitive key, `Bearer <token>` and the
password in `scheme://user:password@host`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

FILTERED: Final = "[Filtered]"

# Whole normalised names (and trailing word runs) that hold secrets.
DEFAULT_SENSITIVE_KEYS: Final[frozenset[str]] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "client_secret",
        "secret_key",
        "secret_access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "auth_token",
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "x_api_key",
        "private_key",
        "privatekey",
        "credentials",
        "credential",
        "cookie",
        "set_cookie",
        "session",
        "sessionid",
        "session_id",
        "csrftoken",
        "csrf_token",
        "xsrf_token",
        "credit_card",
        "card_number",
        "cvv",
        "cvc",
        "ssn",
    }
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-.]+")


def normalize_key(key: str) -> str:
    """`X-Api-Key` → `x_api_key`, `authToken` → `auth_token`, `DB Password` → `db_password`."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", key.strip())).lower().strip("_")


class KeyScrubber:
    """Decides per key; results are cached since a process sees few distinct keys."""

    def __init__(
        self,
        additional_sensitive_keys: Iterable[str] = (),
        safe_keys: Iterable[str] = (),
    ) -> None:
        self.sensitive = DEFAULT_SENSITIVE_KEYS | {normalize_key(k) for k in additional_sensitive_keys}
        self.safe = frozenset(normalize_key(k) for k in safe_keys)
        self._cache: dict[str, bool] = {}
        self._text = _text_pattern(self.sensitive - self.safe)

    def is_sensitive(self, key: str) -> bool:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        result = self._decide(key)
        if len(self._cache) < 10_000:
            self._cache[key] = result
        return result

    def _decide(self, key: str) -> bool:
        name = normalize_key(key)
        if name in self.safe:
            return False
        if name in self.sensitive:
            return True
        words = name.split("_")
        # Trailing word runs: db_password → password; user_x_api_key → x_api_key / api_key.
        return any("_".join(words[i:]) in self.sensitive for i in range(1, len(words)))

    def scrub_text(self, text: str) -> str:
        """Replace secrets inside free text (exception messages, tracebacks)."""
        if not text:
            return text
        text = self._text.sub(_replace_value, text)
        text = _BEARER.sub(r"\1" + FILTERED, text)
        return _URL_PASSWORD.sub(r"\1" + FILTERED + r"\3", text)


def _word_pattern(name: str) -> str:
    # Match the normalised name in any of its spellings: api_key, api-key, apiKey, API_KEY.
    return r"[_\-]?".join(re.escape(part) for part in name.split("_"))


def _text_pattern(sensitive: Iterable[str]) -> re.Pattern[str]:
    names = sorted(sensitive, key=len, reverse=True)
    alternatives = "|".join(_word_pattern(n) for n in names)
    # key (whole word, optionally with a prefix word: db_password) then = or : then an optional quote,
    # an optional auth scheme (`Bearer`, `Basic`) and the value up to a delimiter.
    return re.compile(
        r"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9]{1,40}[_\-]){0,4}(?:" + alternatives + r"))"
        r"(\s*[\"']?\s*[=:]\s*[\"']?)((?:bearer|basic|token|digest)\s+)?([^\s\"',;&)}\]]+)"
    )


def _replace_value(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{match.group(3) or ''}{FILTERED}"


_BEARER: Final = re.compile(r"(?i)(\bbearer\s+)(?!\[Filtered\])[A-Za-z0-9\-._~+/]+=*")
_URL_PASSWORD: Final = re.compile(
    r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]{0,30}://[^:/\s@]{0,200}:)([^@\s/]{1,500})(@)"
)
