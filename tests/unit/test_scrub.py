"""Sensitive-key detection is precise in both directions, and free text loses its secrets."""

from __future__ import annotations

import pytest

from celery_flow.tracking.scrub import FILTERED, KeyScrubber, normalize_key


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Password",
        "passwd",
        "db_password",
        "dbPassword",
        "DB-Password",
        "api_key",
        "apiKey",
        "API-KEY",
        "x-api-key",
        "X-Api-Key",
        "Authorization",
        "auth_token",
        "authToken",
        "access_token",
        "refresh_token",
        "client_secret",
        "secret",
        "secret_key",
        "aws_secret_access_key",
        "private_key",
        "cookie",
        "Set-Cookie",
        "session_id",
        "sessionid",
        "csrftoken",
        "credentials",
        "credit_card",
        "card_number",
        "cvv",
        "token",
        "github_token",
        "stripe_api_key",
    ],
)
def test_sensitive_keys_are_recognised(key: str) -> None:
    assert KeyScrubber().is_sensitive(key), key


@pytest.mark.parametrize(
    "key",
    [
        "passenger_count",
        "passenger",
        "tokenizer",
        "tokens_used",
        "token_count",
        "author",
        "authority",
        "authored_at",
        "keyboard",
        "key",
        "monkey",
        "compass",
        "bypass",
        "secretary",
        "session_count_total",
        "username",
        "email",
        "user_id",
        "description",
    ],
)
def test_ordinary_keys_are_left_alone(key: str) -> None:
    assert not KeyScrubber().is_sensitive(key), key


def test_normalisation() -> None:
    assert normalize_key("X-Api-Key") == "x_api_key"
    assert normalize_key("authToken") == "auth_token"
    assert normalize_key(" DB Password ") == "db_password"


def test_additional_and_safe_keys() -> None:
    scrubber = KeyScrubber(additional_sensitive_keys={"Customer-SSN", "pin_code"}, safe_keys={"token"})
    assert scrubber.is_sensitive("customer_ssn")
    assert scrubber.is_sensitive("pinCode")
    assert not scrubber.is_sensitive("token")
    assert scrubber.is_sensitive("password")
    assert scrubber.scrub_text("token=abc password=x") == f"token=abc password={FILTERED}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login failed: password=hunter2", f"login failed: password={FILTERED}"),
        ("db_password='s3cr3t' host=db", f"db_password='{FILTERED}' host=db"),
        ("api_key: abc123, retry", f"api_key: {FILTERED}, retry"),
        ("X-Api-Key: abc123", f"X-Api-Key: {FILTERED}"),
        ("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: Bearer {FILTERED}"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {FILTERED}"),
        ("sent header Bearer abc.def-ghi", f"sent header Bearer {FILTERED}"),
        ('{"token": "t0k3n"}', f'{{"token": "{FILTERED}"}}'),
        ("redis://user:pa55@host:6379/0", f"redis://user:{FILTERED}@host:6379/0"),
        ("postgresql://app:pw@db/app failed", f"postgresql://app:{FILTERED}@db/app failed"),
        # no false positives
        ("tokenizer=bert author=ann passenger_count=3", "tokenizer=bert author=ann passenger_count=3"),
        ("KeyError: 'password'", "KeyError: 'password'"),
    ],
)
def test_text_patterns(text: str, expected: str) -> None:
    assert KeyScrubber().scrub_text(text) == expected


def test_traceback_source_lines_are_scrubbed() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in connect\n'
        '    client.login(user="bob", password="hunter2")\n'
        "RuntimeError: cannot log in with token=abcdef\n"
    )
    out = KeyScrubber().scrub_text(tb)
    assert "hunter2" not in out
    assert "abcdef" not in out
    assert 'user="bob"' in out
