"""ServerConfig: argument > CELERY_FLOW_* > default, one ConfigError line per bad value, and the one
variable `--reload` hands the resolved config over in."""

from __future__ import annotations

import pytest

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.server.config import CONFIG_ENV, ServerConfig, embedded, resolve
from celery_flow.settings import DEFAULT_TTL
from celery_flow.store import default_store_url
from celery_flow.transport.base import ConfigError

ENV = {
    "CELERY_FLOW_BROKER_URL": "redis://env:6379/0",
    "CELERY_FLOW_STORE": "sqlite:///env.db",
    "CELERY_FLOW_PREFIX": "env_prefix",
    "CELERY_FLOW_TTL": "2h",
    "CELERY_FLOW_MAX_TASKS": "500",
    "CELERY_FLOW_BASIC_AUTH": "env:secret",
    "CELERY_FLOW_EMBEDDED_CONSUMER": "no",
    "CELERY_FLOW_HEARTBEAT_INTERVAL": "40",
    "CELERY_FLOW_STUCK_AFTER": "10m",
}


def test_arguments_win_over_the_environment_which_wins_over_defaults() -> None:
    from_env = resolve(environ=ENV)
    assert from_env == ServerConfig(
        broker_url="redis://env:6379/0", store_url="sqlite:///env.db", prefix="env_prefix", ttl=7200.0,
        max_tasks=500, basic_auth=("env", "secret"), embedded_consumer=False, heartbeat_interval=40.0,
        stuck_after=600.0,
    )  # fmt: skip
    given = resolve("redis://arg:6379/0", "sqlite:///arg.db", "arg", "30m", 7, "arg:pw", True, environ=ENV)
    assert (given.broker_url, given.store_url, given.prefix, given.ttl, given.max_tasks) == (
        "redis://arg:6379/0", "sqlite:///arg.db", "arg", 1800.0, 7,
    )  # fmt: skip
    assert (given.basic_auth, given.embedded_consumer) == (("arg", "pw"), True)
    assert resolve(stuck_after="90s", environ=ENV).stuck_after == 90.0
    assert resolve(stuck_after="0", environ=ENV).stuck_after is None  # 0: off
    defaults = resolve(environ={})
    assert (defaults.broker_url, defaults.prefix, defaults.ttl, defaults.max_tasks) == (
        None, "celery_flow", float(DEFAULT_TTL), None,
    )  # fmt: skip
    assert (defaults.embedded_consumer, defaults.heartbeat_interval) == (True, DEFAULT_HEARTBEAT_INTERVAL)
    assert defaults.stuck_after is None
    assert defaults.store_url == default_store_url()
    # `celery -A proj flow`: the Celery app's broker comes after the argument and the variable.
    assert resolve(default_broker_url="amqp://app//", environ={}).broker_url == "amqp://app//"
    assert resolve(default_broker_url="amqp://app//", environ=ENV).broker_url == "redis://env:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TTL", "soon", "CELERY_FLOW_TTL='soon' is not valid: expected a duration"),
        ("MAX_TASKS", "0", "CELERY_FLOW_MAX_TASKS='0' is not valid: expected a positive integer"),
        (
            "EMBEDDED_CONSUMER",
            "maybe",
            "CELERY_FLOW_EMBEDDED_CONSUMER='maybe' is not valid: expected a boolean",
        ),
        ("HEARTBEAT_INTERVAL", "-1", "CELERY_FLOW_HEARTBEAT_INTERVAL='-1' is not valid: expected a positive"),
        ("STUCK_AFTER", "later", "CELERY_FLOW_STUCK_AFTER='later' is not valid: expected a duration"),
        ("BASIC_AUTH", "nocolon", "basic auth must look like user:password (set --basic-auth or CELERY_FLOW"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(environ={f"CELERY_FLOW_{name}": value})
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_reload_hands_over_the_resolved_config_in_one_variable() -> None:
    config = resolve("redis://h:6379/0", "sqlite:///x.db", "p", "1d", 9, "u:p:w", environ={})
    handed = config.to_env()
    assert list(handed) == [CONFIG_ENV]
    # Read back as it was resolved, whatever CELERY_FLOW_* the new process also sees.
    assert ServerConfig.from_env({**handed, **ENV}) == config
    assert ServerConfig.from_env(ENV) == resolve(environ=ENV)
    with pytest.raises(ConfigError, match=f"{CONFIG_ENV} is not a celery-flow server config"):
        ServerConfig.from_env({CONFIG_ENV: '{"prefix": 1}'})


def test_embedding_keeps_everything_unless_told() -> None:
    config = embedded(None, None, None, None, None, True, environ=ENV)
    assert (config.broker_url, config.store_url, config.prefix) == (
        "redis://env:6379/0", "sqlite:///env.db", "env_prefix",
    )  # fmt: skip
    # Retention, auth and the consumer switch are the arguments', not the environment's.
    assert (config.ttl, config.max_tasks, config.basic_auth, config.embedded_consumer) == (
        None,
        None,
        None,
        True,
    )
