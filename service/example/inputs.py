"""Checks for resolver arguments, each returning the clean value or raising ``bad_input``, and
the limits the schema applies with them."""

from __future__ import annotations

import re

from service.example.errors import bad_input

BIGINT_MAX = 2**63 - 1
MAX_TITLE_CHARS = 200
MAX_CHATROOM_CHARS = 100
MAX_MESSAGE_CHARS = 2000
MAX_PAGE = 100
_DIGITS = re.compile(r"[0-9]+")


def parse_id(value: object, argument: str, minimum: int = 1) -> int:
    """An ``ID`` argument as the integer key of a row (``minimum`` .. bigint max)."""
    text = str(value)
    if not _DIGITS.fullmatch(text) or not minimum <= int(text) <= BIGINT_MAX:
        raise bad_input(argument, f"must be an integer id of at least {minimum}, not {text!r}")
    return int(text)


def no_nul(value: str, argument: str) -> str:
    """``value`` unless it holds U+0000, which Postgres text cannot store: that is the client's
    bad input, refused naming the argument (not a driver error later)."""
    if "\x00" in value:
        raise bad_input(argument, "must not contain the NUL character (U+0000)")
    return value


def optional_text(value: str | None, argument: str) -> str | None:
    """An optional string: ``None`` as it is, else checked by ``no_nul``."""
    return None if value is None else no_nul(value, argument)


def text(value: str, argument: str, max_chars: int) -> str:
    """A string that is not blank, holds no NUL and is at most ``max_chars`` characters long."""
    no_nul(value, argument)
    if not value.strip():
        raise bad_input(argument, "must not be empty")
    if len(value) > max_chars:
        raise bad_input(argument, f"must be at most {max_chars} characters, not {len(value)}")
    return value


def int_between(value: int | None, argument: str, low: int, high: int) -> int:
    """An integer in ``low`` .. ``high``; an explicit null is refused too."""
    if value is None:
        raise bad_input(argument, "must not be null")
    if not low <= value <= high:
        raise bad_input(argument, f"must be between {low} and {high}, not {value}")
    return value
