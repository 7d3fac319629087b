"""Segment attributes an exposure carries (README, "Segments"): the check the event routes
use, and the JSON text the writer stores (exposures.attributes)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from litmus.api.schemas import SLUG

MAX_ATTRIBUTES = 5
MAX_ATTRIBUTE_VALUE = 128
_KEY = re.compile(SLUG)  # a metric name's form
KEY_ERROR = ("must be an attribute name: lower-case letters, digits, '_' or '-', starting with "
             "a letter or digit, at most 64 characters")


def attribute_key_problem(key: Any) -> str | None:
    """Why `key` cannot name a segment attribute (None: fine)."""
    if type(key) is not str or not _KEY.fullmatch(key):  # "$" also matches before "\n"
        return f"{key!r} {KEY_ERROR}"
    return None


_KNOWN_KEYS: set[str] = set()  # names already checked against the pattern (bounded below)
_KNOWN_KEYS_MAX = 4096


# Attribute objects already checked, by a JSON text of them -> the text stored: segments
# repeat (a few countries, a few devices), so most exposures carry an object seen before. A
# JSON text is an exact key of the object it parses to: two objects with one text have the
# same names, order and values, value types included ({"tier": "1"} and {"tier": 1} differ),
# and only valid objects are kept. The keys are orjson's text of a parsed object
# (attributes_text) or the bytes a request carried (attributes_from_json); both parse to it.
_TEXTS: dict[bytes, str] = {}
_TEXTS_MAX = 4096
_SENT_KEY_MAX = 1024  # bytes: a valid object padded with spaces or repeated keys is not kept


def _remember(key: bytes, text: str) -> None:
    if len(_TEXTS) >= _TEXTS_MAX:
        _TEXTS.clear()
    _TEXTS[key] = text


def attributes_from_json(raw: bytes) -> tuple[bool, str | None]:
    """The JSON text of an `attributes` value as sent -> (valid, the text stored: None for
    null or an empty object); attributes_text says why an invalid one is refused. For the
    events routes' decoder, which keeps the value unparsed: most are a hit on these bytes."""
    text = _TEXTS.get(raw)
    if text is not None:
        return True, text
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    if parsed is None:  # null: as if not sent
        return True, None
    text, why = attributes_text(parsed)
    if why is not None:
        return False, None
    if text is not None and len(raw) <= _SENT_KEY_MAX:
        _remember(raw, text)
    return True, text


def attributes_text(raw: Any) -> tuple[str | None, str | None]:
    """An `attributes` object -> the JSON text stored (None for an empty object), or why it is
    refused: at most 5 keys of a metric name's form, each a non-empty string value of at most
    128 characters without NUL."""
    if type(raw) is not dict:
        return _checked_text(raw)
    try:
        key = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: refused below
        return _checked_text(raw)
    text = _TEXTS.get(key)
    if text is not None:
        return text, None
    text, why = _fresh_text(raw, key)
    if text is not None:
        _remember(key, text)
    return text, why


def _fresh_text(raw: dict[str, Any], text: bytes) -> tuple[str | None, str | None]:
    if 0 < len(raw) <= MAX_ATTRIBUTES:
        # The common case first: names seen before, short strings. Anything else takes the
        # full checks below, which say what is wrong.
        for key, value in raw.items():
            if (key not in _KNOWN_KEYS or type(value) is not str or not value
                    or len(value) > MAX_ATTRIBUTE_VALUE or "\x00" in value):
                break
        else:
            return text.decode(), None
    return _checked_text(raw)


def _checked_text(raw: Any) -> tuple[str | None, str | None]:
    if type(raw) is not dict:
        return None, 'must be an object of attribute names and strings, e.g. {"country": "DE"}'
    if len(raw) > MAX_ATTRIBUTES:
        return None, f"at most {MAX_ATTRIBUTES} attributes (got {len(raw)})"
    for key, value in raw.items():
        problem = attribute_key_problem(key)
        if problem is not None:
            return None, problem
        if len(_KNOWN_KEYS) < _KNOWN_KEYS_MAX:
            _KNOWN_KEYS.add(key)
        if type(value) is not str:
            return None, (f"{key}: must be a string (send numbers and flags as text, "
                          f"e.g. \"3\" or \"true\")")
        if not value or len(value) > MAX_ATTRIBUTE_VALUE or "\x00" in value:
            return None, (f"{key}: must be a non-empty string of at most "
                          f"{MAX_ATTRIBUTE_VALUE} characters without NUL")
    if not raw:
        return None, None
    return orjson.dumps(raw).decode(), None
