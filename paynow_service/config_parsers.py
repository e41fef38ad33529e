"""How each environment variable's text becomes a value: one parser per kind of setting.

Each parser takes the variable's name and its raw text and returns the value, or raises
`ConfigError` with one line naming the variable and what it allows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from paynow_service.domain.errors import ConfigError

Parser = Callable[[str, str], object]


def choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not allowed: use one of {' | '.join(choices)}")
        return value

    return parse


def upper_choice(*choices: str) -> Callable[[str, str], str]:
    """`choice`, the value upper-cased (LOG_LEVEL: `info` means `INFO`)."""
    lower = choice(*choices)

    def parse(name: str, raw: str) -> str:
        return lower(name, raw).upper()

    return parse


def integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer: use {low}..{high}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={raw!r} is out of range: use {low}..{high}")
        return value

    return parse


def number(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number: use {low}..{high}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={raw!r} is out of range: use {low}..{high}")
        return value

    return parse


def boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not allowed: use true | false")


def text(name: str, raw: str) -> str:
    return raw.strip()


def resource_id(name: str, raw: str) -> str:
    value = raw.strip()
    # Pub/Sub ids: 3-255 characters, starting with a letter.
    if len(value) < 3 or not value[0].isalpha() or not all(c.isalnum() or c in "-_.~+%" for c in value):
        raise ConfigError(
            f"{name}={raw!r} is not a Pub/Sub id: 3+ characters, a letter first, [A-Za-z0-9-_.~+%]"
        )
    return value


def host_port(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{name}={raw!r} is not host:port (e.g. 127.0.0.1:8085)")
    return value


def comma_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def signing_keys(name: str, raw: str) -> tuple[str, ...]:
    # A secret: no message here ever quotes the value.
    if not raw.strip():
        return ()
    keys = tuple(part.strip() for part in raw.split(","))
    if not all(keys):
        raise ConfigError(f"{name} has an empty key (a stray comma?): give a comma list of keys")
    return keys


def routes(allowed: tuple[str, ...]) -> Callable[[str, str], tuple[str, ...]]:
    def parse(name: str, raw: str) -> tuple[str, ...]:
        chosen = comma_list(name, raw)
        unknown = [r for r in chosen if r not in allowed]
        if unknown or not chosen:
            raise ConfigError(f"{name}={raw!r} is not allowed: a comma list of {', '.join(allowed)}")
        return chosen

    return parse


def optional_path(name: str, raw: str) -> Path | None:
    value = raw.strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r} is not a readable file: give the path of a TOML catalog")
    return path


def output_path(name: str, raw: str) -> Path | None:
    """A file to write (created if missing) in a directory that exists; empty: none."""
    value = raw.strip()
    if not value:
        return None
    path = Path(value)
    if not path.parent.is_dir() or path.is_dir():
        raise ConfigError(f"{name}={raw!r} is not a writable file path: its directory must exist")
    return path


def url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL")
    return value
