"""The events routes' typed decoder for well-formed batches: msgspec decodes
`{"events": [...]}` straight into typed structs, so the field types (strings, finite
numbers, covariate values) are checked in C as the JSON is read, and an exposure's
`attributes` stay as the bytes sent, which key the cache of checked objects
(attributes.attributes_from_json).

It only ever says yes: a body it would accept is accepted by `validate_events` too, with the
same rows (tests/api/test_event_decode.py checks this on generated bodies, valid and not).
Anything else - a single event, a field of another type, an unknown experiment, a bad time, a
NUL, any doubt - returns None, and the route takes the full path (orjson and validate_events),
which names every problem. So this module holds no error message and no rule of its own: each
condition below is one that validate_events checks, in the same words where it can.

Why it exists: exposures carrying covariates and attributes cost the full path half as much
again per event; decoded typed, the difference halves and the rest gets cheaper too
(docs/PERFORMANCE.md, "The typed decoder").
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from litmus.api.assign import MAX_UNIT_ID
from litmus.api.attributes import _TEXTS, attributes_from_json
from litmus.api.event_schemas import (
    _SLUG,
    MAX_EVENT_ID,
    MAX_EVENTS,
    MAX_REF,
    EventKind,
    Lookup,
    _resolve,
    _Resolved,
    _served_weight,
    parse_ts,
)
from litmus.core.unitfold import MAX_COVARIATES
from litmus.db.events import Cov
from litmus.services.ingest import EXPOSURE, METRIC, EventBatch, server_event_id, to_micros

_NOT_SENT = msgspec.Raw(b"")


class _Typed(msgspec.Struct, forbid_unknown_fields=True):
    """An event of POST /api/v1/events. The fields some types must not have are UNSET when
    absent (null is not absent: validate_events calls a null field of the wrong type unknown)."""

    experiment: str
    unit_id: str
    type: str | None = None
    variant: str | None = None
    ts: str | float | None = None
    event_id: str | None = None
    metric: str | UnsetType | None = UNSET
    value: float | UnsetType | None = UNSET
    probability: float | UnsetType | None = UNSET
    covariates: dict[str, float] | UnsetType | None = UNSET
    attributes: msgspec.Raw = _NOT_SENT


class _Exposure(msgspec.Struct, forbid_unknown_fields=True):
    """An event of POST /api/v1/events/exposure (the fields an exposure may have)."""

    experiment: str
    unit_id: str
    variant: str | None = None
    ts: str | float | None = None
    event_id: str | None = None
    probability: float | None = None
    covariates: dict[str, float] | None = None
    attributes: msgspec.Raw = _NOT_SENT
    type: ClassVar[str] = "exposure"
    metric: ClassVar[UnsetType] = UNSET
    value: ClassVar[UnsetType] = UNSET


class _Metric(msgspec.Struct, forbid_unknown_fields=True):
    """An event of POST /api/v1/events/metric (the fields a metric may have)."""

    experiment: str
    unit_id: str
    metric: str | None = None
    value: float | None = None
    variant: str | None = None
    ts: str | float | None = None
    event_id: str | None = None
    type: ClassVar[str] = "metric"
    probability: ClassVar[UnsetType] = UNSET
    covariates: ClassVar[UnsetType] = UNSET
    attributes: ClassVar[msgspec.Raw] = _NOT_SENT


class _TypedBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Typed]


class _ExposureBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Exposure]


class _MetricBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_Metric]


_DECODERS: dict[str, msgspec.json.Decoder[_TypedBatch] | msgspec.json.Decoder[_ExposureBatch]
                | msgspec.json.Decoder[_MetricBatch]] = {
    "typed": msgspec.json.Decoder(_TypedBatch),
    "exposure": msgspec.json.Decoder(_ExposureBatch),
    "metric": msgspec.json.Decoder(_MetricBatch),
}
_TYPES = frozenset({"exposure", "metric", "conversion"})


def decode_events(raw: bytes, kind: EventKind, lookup: Lookup, now: datetime,
                  ) -> EventBatch | None:
    """A batch body -> the rows validate_events would give, or None: take the full path."""
    events: list[_Typed] | list[_Exposure] | list[_Metric]
    try:
        events = _DECODERS[kind].decode(raw).events
    except (msgspec.DecodeError, RecursionError):
        # Malformed, a single event, or a field the structs refuse; or an `attributes` value
        # nested deeper than msgspec walks when it measures the value it keeps unparsed.
        return None
    if not events or len(events) > MAX_EVENTS:
        return None
    out = EventBatch(nbytes=len(raw) + 200 * len(events))
    exposures, metrics, claims = out.exposures, out.metrics, out.claims
    resolved: dict[str, _Resolved] = {}
    now_ts = to_micros(now)
    now_us = now_ts[0]
    for ev in events:
        typ = ev.type
        if typ not in _TYPES:
            return None
        ref = ev.experiment
        res = resolved.get(ref)
        if res is None:
            if not ref or len(ref) > MAX_REF:
                return None
            res = resolved[ref] = _resolve(ref, lookup)
        entry, uid = res.entry, res.uid
        if entry is None or uid is None:  # unknown, or a draft
            return None
        unit = ev.unit_id
        if not unit or len(unit) > MAX_UNIT_ID or "\x00" in unit:
            return None
        raw_ts = ev.ts
        if raw_ts is None:
            ts = now_ts
        else:
            parsed = parse_ts(raw_ts, now_us)
            if isinstance(parsed, str):
                return None
            ts = parsed
        eid = ev.event_id
        if eid is not None and (not eid or len(eid) > MAX_EVENT_ID or "\x00" in eid):
            return None
        raw_variant = ev.variant
        variant: int | None = None
        if raw_variant is not None:
            variant = entry.variant_index.get(raw_variant)
            if variant is None:
                return None
        if typ == "exposure":
            if (variant is None or raw_variant is None or ev.metric is not UNSET
                    or ev.value is not UNSET):
                return None
            p = ev.probability
            if p is None or p is UNSET:
                prob = -_served_weight(entry, raw_variant)
            elif 0 < p <= 1:
                prob = p
            else:
                return None
            c: list[Cov] = [None] * MAX_COVARIATES
            cov = ev.covariates
            if cov is not None and cov is not UNSET:
                positions = res.covariates
                for name, x in cov.items():  # finite floats: msgspec refuses anything else
                    i = positions.get(name)
                    if i is None:  # undeclared
                        return None
                    c[i] = x
            attrs: str | None = None
            a = ev.attributes
            if a:
                b = bytes(a)
                attrs = _TEXTS.get(b)  # most are an object seen before
                if attrs is None:
                    ok, attrs = attributes_from_json(b)
                    if not ok:
                        return None
            if eid is None:
                eid = server_event_id()
            else:
                claims.append((uid, EXPOSURE, eid))
            exposures.append((uid, unit, variant, ts, eid, prob, c[0], c[1], c[2], c[3], c[4],
                              attrs))
        else:
            if ev.probability is not UNSET or ev.covariates is not UNSET or ev.attributes:
                return None
            m = ev.metric
            if m is None or m is UNSET:
                if typ == "metric":
                    return None
                metric = "conversion"
            elif _SLUG.fullmatch(m):
                metric = m
            else:
                return None
            v = ev.value
            if v is None or v is UNSET:
                if typ == "metric":
                    return None
                value = 1.0
            else:
                value = v
            if eid is None:
                eid = server_event_id()
            else:
                claims.append((uid, METRIC, eid))
            metrics.append((uid, unit, metric, value, variant, ts, eid))
    return out
