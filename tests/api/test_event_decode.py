"""The events routes' typed decoder (litmus/api/event_decode.py) against the full path.

The decoder may only say yes to what validate_events accepts, with the same rows; every
other body goes the full path, which names the problems. Checked on generated bodies, valid
and not (compact or spaced JSON, some with a key sent twice), on every single-field change of
a valid event, and on bodies only the full path can answer, for the three routes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from litmus.api import attributes
from litmus.api.assign import MAX_UNIT_ID
from litmus.api.event_decode import decode_events
from litmus.api.event_schemas import MAX_EVENT_ID, EventKind, validate_events
from litmus.core.models import Experiment, Variant
from litmus.errors import PayloadTooLarge, ValidationFailed
from litmus.services.ingest import EventBatch
from tests.conftest import CLIENT, launched

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
METRICS = {"primary": "conversion", "guardrails": [], "covariates": ["pre_sessions", "pre_revenue"]}


@dataclass
class _Entry:
    experiment: Experiment
    variant_index: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 1})
    weights: dict[str, float] = field(default_factory=lambda: {"a": 0.25, "b": 0.75})


def _entry(key: str, status: Any, winner: str | None = None) -> _Entry:
    return _Entry(Experiment(
        id=f"id-{key}", key=key, name=key, description="", owner_team="t", status=status,
        variants=(Variant("a", 0.25), Variant("b", 0.75)), metrics=METRICS, winner=winner))


REGISTRY = {"exp": _entry("exp", "running"), "won": _entry("won", "stopped", winner="b"),
            "draft": _entry("draft", "draft")}


def lookup(ref: str) -> Any:
    return REGISTRY.get(ref)


ABSENT = object()
FIELDS: dict[str, list[Any]] = {
    "experiment": ["exp", "exp", "won", "draft", "nope", "", 5, None],
    "unit_id": ["u1", "u2", "", "a\x00b", "x" * (MAX_UNIT_ID + 1), 3, None],
    "variant": ["a", "b", "zz", 1, None],
    "ts": [NOW_MS - 5000, NOW_MS - 1.5, "2026-12-01T00:00:00Z", "2026-12-01T00:00:00",
           "2026-12-01T00:00:00+02:00", "bad", 1_700_000, NOW_MS + 3 * 86_400_000, 1e300, True,
           None],
    "event_id": ["e1", "e2", "", "x\x00", "e" * (MAX_EVENT_ID + 1), 7, None],
    "probability": [0.5, 1, 1.0, 0, 1.5, -0.1, True, "0.5", None],
    "covariates": [{"pre_sessions": 3}, {"pre_sessions": 3, "pre_revenue": 2.5},
                   {"pre_revenue": 1e308, "pre_sessions": -0.0}, {}, {"tenure": 1},
                   {"pre_sessions": True}, {"pre_sessions": "3"}, {"pre_sessions": 2**70},
                   {"Bad": 1}, [1], None, {f"c{i}": 1 for i in range(6)},
                   {"pre_revenue": 123456789012345678901234567891}, {"pre_sessions\n": 1}],
    "attributes": [{"country": "DE"}, {"country": "DE", "device": "ios"}, {"device": "ios"}, {},
                   {"country": 1}, {"country": ""}, {"country": "a\x00"}, {"Bad Key": "x"},
                   {"country": "x" * 129}, None, "DE", {f"k{i}": "v" for i in range(6)},
                   {"country\n": "DE"}],
    "metric": ["revenue", "latency_ms", "Bad", "", 3, None, "revenue\n"],
    "value": [1, 2.5, -3, 0, True, "1", None, 1e308, 2**70, -(10**29) - 7, 10**400],
    "type": ["exposure", "metric", "conversion", "other", None, 1],
}
ROUTE_FIELDS: dict[str, tuple[str, ...]] = {
    "exposure": ("experiment", "unit_id", "variant", "ts", "event_id", "probability",
                 "covariates", "attributes"),
    "metric": ("experiment", "unit_id", "metric", "value", "variant", "ts", "event_id"),
}


def _valid_event(draw: st.DrawFn, kind: EventKind) -> dict[str, Any]:
    """A valid event for the route: each optional field absent or one of its first two
    (valid) values."""
    typ = draw(st.sampled_from(["exposure", "metric", "conversion"])) if kind == "typed" else kind
    ev: dict[str, Any] = {"type": typ} if kind == "typed" else {}
    for name in ROUTE_FIELDS["exposure" if typ == "exposure" else "metric"]:
        value = draw(st.sampled_from([ABSENT, *FIELDS[name][:2]]))
        if value is not ABSENT:
            ev[name] = value
    ev["experiment"] = draw(st.sampled_from(["exp", "won"]))
    ev.setdefault("unit_id", "u1")
    if typ == "metric":
        ev.setdefault("metric", "revenue")
        ev.setdefault("value", 2.5)
    if typ == "exposure":
        ev.setdefault("variant", "a")
    return ev


@st.composite
def bodies(draw: st.DrawFn) -> tuple[EventKind, bytes, bool]:
    """(route kind, body, whether every event is valid): valid events, of which some have
    one field changed to any value of any field (or dropped, or null)."""
    kind: EventKind = draw(st.sampled_from(["typed", "exposure", "metric"]))
    events = [_valid_event(draw, kind) for _ in range(draw(st.integers(1, 5)))]
    valid = True
    for _ in range(draw(st.integers(0, 2))):
        ev = draw(st.sampled_from(events))
        name = draw(st.sampled_from(sorted(FIELDS)))
        change = draw(st.sampled_from(["set", "drop", "null"]))
        if change == "set":
            ev[name] = draw(st.sampled_from(FIELDS[name]))
        elif change == "drop":
            ev.pop(name, None)
        else:
            ev[name] = None
        valid = False
    if draw(st.integers(0, 20)) == 0:
        events = []
        valid = False
    body: Any = {"events": events}
    if not valid and draw(st.booleans()) and events:
        body = events[0]  # a single event: the full path's only
    layout = draw(st.sampled_from(["compact", "spaced", "repeated"]))
    if layout == "compact":
        raw = json.dumps(body, separators=(",", ":")).encode()
    else:
        raw = json.dumps(body).encode()
    if layout == "repeated" and events and events[0]:
        # A key sent twice: JSON parsers keep the last; both paths must agree on which.
        first = next(iter(events[0]))
        raw = raw.replace(b"{" + json.dumps(first).encode(),
                          b"{" + json.dumps(first).encode() + b': "dup", '
                          + json.dumps(first).encode(), 1)
    return kind, raw, valid


def _full(raw: bytes, kind: EventKind) -> EventBatch | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    try:
        return validate_events(body, kind, lookup, NOW, len(raw))
    except (ValidationFailed, PayloadTooLarge):
        return None


def _comparable(batch: EventBatch) -> str:
    """The batch with server-made event ids (random) blanked: a client's are claimed. As its
    repr, so that types count too (1 == 1.0 and 0.0 == -0.0, but not as stored)."""
    claimed = {c[2] for c in batch.claims}
    exposures = [(*r[:4], r[4] if r[4] in claimed else "server", *r[5:])
                 for r in batch.exposures]
    metrics = [(*r[:6], r[6] if r[6] in claimed else "server") for r in batch.metrics]
    return repr((exposures, metrics, batch.claims, batch.nbytes, batch.duplicates))


@settings(max_examples=1500, deadline=None)
@given(case=bodies())
def test_the_decoder_accepts_only_what_the_full_path_accepts_with_the_same_rows(
        case: tuple[EventKind, bytes, bool]) -> None:
    kind, raw, valid = case
    fast, full = _check(raw, kind)
    if valid and raw.startswith(b'{"events"') and b'"dup"' not in raw:
        # Well-formed batches of valid events are what the decoder is for: it takes them.
        assert full, raw
        assert fast, raw


def _check(raw: bytes, kind: EventKind) -> tuple[bool, bool]:
    """The decoder's property on one body; (it took it, the full path took it)."""
    fast = decode_events(raw, kind, lookup, NOW)
    full = _full(raw, kind)
    if fast is not None:
        assert full is not None, raw
        assert _comparable(fast) == _comparable(full), raw
    return fast is not None, full is not None


BASE: dict[str, dict[str, Any]] = {
    "exposure": {"experiment": "exp", "unit_id": "u1", "variant": "a", "ts": NOW_MS - 5000,
                 "event_id": "e1", "probability": 0.5, "covariates": {"pre_sessions": 3},
                 "attributes": {"country": "DE"}},
    "metric": {"experiment": "exp", "unit_id": "u1", "metric": "revenue", "value": 2.5,
               "variant": "b", "ts": "2026-12-01T00:00:00Z", "event_id": "e2"},
    "conversion": {"experiment": "won", "unit_id": "u2"},
}


@pytest.mark.parametrize("kind,typ", [("typed", "exposure"), ("typed", "metric"),
                                      ("typed", "conversion"), ("exposure", "exposure"),
                                      ("metric", "metric")])
def test_every_single_change_of_a_valid_event(kind: EventKind, typ: str) -> None:
    """Each field of a valid event set to each value of every field's pool, dropped, or
    null, beside a valid event: the decoder agrees with the full path on all of them, and takes
    every body the full path takes."""
    base = dict(BASE[typ], **({"type": typ} if kind == "typed" else {}))
    taken = refused = 0
    for name, pool in FIELDS.items():
        for change in [*pool, ABSENT]:
            ev = dict(base)
            if change is ABSENT:
                ev.pop(name, None)
            else:
                ev[name] = change
            raw = json.dumps({"events": [dict(base, unit_id="other"), ev]}).encode()
            fast, full = _check(raw, kind)
            assert fast == full, raw
            taken += fast
            refused += not full
    assert taken > 20 and refused > 20, (taken, refused)


@pytest.mark.parametrize("raw", [
    # Things only the full path says, each of which the decoder hands over.
    b'{"events": []}',
    b'{"events": [{"type": "exposure", "experiment": "exp", "unit_id": "u", "variant": "a"}],'
    b' "extra": 1}',
    b'{"type": "exposure", "experiment": "exp", "unit_id": "u", "variant": "a"}',
    b'{"events": [{"type": "metric", "experiment": "exp", "unit_id": "u", "metric": "m",'
    b' "value": NaN}]}',
    b'{"events": [{"type": "exposure", "experiment": "exp", "unit_id": "u", "variant": "a",'
    b' "covariates": {"pre_sessions": 1e400}}]}',
    b'{"events": [{"type": "exposure", "experiment": "exp", "unit_id": "\\ud800", "variant": "a"}]}',
    b'{"events": [{"type": "exposure", "experiment": "exp", "unit_id": "u", "variant": "a",'
    b' "attributes": {"country": "\\ud800"}}]}',
    b'{"events": [{"type": "conversion", "experiment": "exp", "unit_id": "u",'
    b' "attributes": null}]}',
    b'{"events": [{"type": "exposure", "experiment": "exp", "unit_id": "u", "variant": "a",'
    b' "metric": null}]}',
    b'',
    # msgspec walks an unparsed value to find its end, and gives up (RecursionError) deep
    # down where orjson's own depth limit refuses the body.
    b'{"events":[{"type":"exposure","experiment":"exp","unit_id":"u","variant":"a",'
    b'"attributes":{"a":' + b"[" * 3000 + b"]" * 3000 + b"}}]}",
    # "$" matches before a final newline: names are matched whole.
    b'{"events":[{"type":"metric","experiment":"exp","unit_id":"u","metric":"revenue\\n",'
    b'"value":1}]}',
    b'{"events":[{"type":"exposure","experiment":"exp","unit_id":"u","variant":"a",'
    b'"attributes":{"country\\n":"DE"}}]}',
])
def test_what_the_decoder_hands_to_the_full_path(raw: bytes) -> None:
    assert decode_events(raw, "typed", lookup, NOW) is None


def test_attributes_sent_in_any_layout_are_stored_as_one_text() -> None:
    """The cache of checked attributes is keyed by the bytes sent; the text stored is the
    same for every layout of one object, and the one the full path stores."""
    texts = set()
    for attrs in (b'{"country":"FR","device":"web"}', b'{ "country" : "FR", "device":"web" }'):
        raw = (b'{"events":[{"type":"exposure","experiment":"exp","unit_id":"u","variant":"a",'
               b'"attributes":' + attrs + b'}]}')
        for _ in range(2):  # a miss, then a hit
            fast = decode_events(raw, "typed", lookup, NOW)
            assert fast is not None
            texts.add(fast.exposures[0][-1])
        full = _full(raw, "typed")
        assert full is not None
        texts.add(full.exposures[0][-1])
    assert texts == {'{"country":"FR","device":"web"}'}


def test_padded_attributes_are_not_kept_as_cache_keys() -> None:
    """The cache of checked attributes is keyed by the bytes sent only when they are short: a
    valid object padded with spaces (or a key repeated) is checked, stored as its text, and
    not kept, so a request cannot pin megabytes in the cache."""
    padded = b'{"country":"PT"' + b" " * 100_000 + b"}"
    raw = (b'{"events":[{"type":"exposure","experiment":"exp","unit_id":"u","variant":"a",'
           b'"attributes":' + padded + b"}]}")
    fast = decode_events(raw, "typed", lookup, NOW)
    assert fast is not None and fast.exposures[0][-1] == '{"country":"PT"}'
    assert padded not in attributes._TEXTS
    assert max(map(len, attributes._TEXTS)) <= 1024


async def test_deeply_nested_attributes_are_a_clear_400(client: TestClient,
                                                        db: asyncpg.Connection) -> None:
    """Nesting deeper than JSON parsers go is refused with 400, not a server error, and
    nothing is stored."""
    await launched(client)
    deep = b"[" * 3000 + b"]" * 3000
    for path in ("/api/v1/events", "/api/v1/events/exposure"):
        body = (b'{"events":[{"type":"exposure",' if path.endswith("events") else
                b'{"events":[{') + (b'"experiment":"ranker","unit_id":"u","variant":"model_a",'
                                    b'"attributes":{"a":' + deep + b"}}]}")
        resp = await client.post(path, data=body,
                                 headers={**CLIENT, "Content-Type": "application/json"})
        got = await resp.json()
        assert resp.status == 400, got
        assert "not valid JSON" in got["error"]["message"], got
    assert await db.fetchval("SELECT count(*) FROM exposures") == 0


@pytest.mark.parametrize("field,value", [("metric", "revenue\n"),
                                         ("covariates", {"pre_sessions\n": 1}),
                                         ("attributes", {"country\n": "DE"})])
def test_a_name_with_a_final_newline_is_refused(field: str, value: Any) -> None:
    """Names are matched whole: a regex's "$" would also match before a final newline."""
    typ = "metric" if field == "metric" else "exposure"
    ev = dict(BASE[typ], type=typ, **{field: value})
    raw = json.dumps({"events": [ev]}).encode()
    assert _full(raw, "typed") is None
    assert decode_events(raw, "typed", lookup, NOW) is None
