"""Event payloads: pydantic models (documentation) and the fast validator the endpoints use.

Pydantic per event costs ~10x the hand-written checks below on 10,000-event batches (see
docs/PERFORMANCE.md), so the endpoints validate orjson-parsed dicts here and give the same
kind of errors: every bad event named by index and field (`events[3].value`), one clear
reason each, and nothing stored unless every event is valid.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from litmus.api.schemas import SLUG
from litmus.core.models import Experiment
from litmus.errors import PayloadTooLarge, ValidationFailed
from litmus.services.ingest import EventBatch, server_event_id

MAX_EVENTS = 10_000
MAX_UNIT_ID = 256
MAX_EVENT_ID = 128
MAX_REF = 200
MAX_FIELDS_SHOWN = 1000
FUTURE_LIMIT = timedelta(days=1)
# Anything before 2000 is almost surely epoch seconds sent as milliseconds.
EPOCH_MS_MIN = 946_684_800_000
_SLUG = re.compile(SLUG)

EventKind = Literal["exposure", "metric", "typed"]


# -- pydantic models: the documented shape (OpenAPI), not used on the hot path ----------------

Ts = datetime | int | float


class ExposureEventIn(BaseModel):
    """An exposure: this unit was served this variant of this experiment."""

    model_config = ConfigDict(extra="forbid")
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    variant: Annotated[str, StringConstraints(min_length=1)]
    ts: Ts | None = None
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None


class MetricEventIn(BaseModel):
    """A metric value for a unit (a bandit's reward is a metric)."""

    model_config = ConfigDict(extra="forbid")
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    metric: Annotated[str, StringConstraints(pattern=SLUG)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    variant: Annotated[str, StringConstraints(min_length=1)] | None = None
    ts: Ts | None = None
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None


class TypedEventIn(BaseModel):
    """`POST /api/v1/events`: `type` picks exposure, metric or conversion (metric, value 1)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["exposure", "metric", "conversion"]
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    variant: Annotated[str, StringConstraints(min_length=1)] | None = None
    metric: Annotated[str, StringConstraints(pattern=SLUG)] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    ts: Ts | None = None
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None


class EventBatchIn(BaseModel):
    """Up to 10,000 events in one all-or-nothing body."""

    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_EVENTS)]


class EventsAccepted(BaseModel):
    """202: the events are durable (or, with `?wait=false`, accepted into the buffer)."""

    accepted: int
    exposures: int
    metrics: int
    durable: bool


# -- the fast path ---------------------------------------------------------------------------

class EntryLike(Protocol):
    """What validation needs from a registry entry."""

    @property
    def experiment(self) -> Experiment: ...

    @property
    def variant_index(self) -> dict[str, int]: ...


Lookup = Callable[[str], EntryLike | None]

_ALLOWED = {
    "exposure": frozenset({"experiment", "unit_id", "variant", "ts", "event_id"}),
    "metric": frozenset({"experiment", "unit_id", "metric", "value", "variant", "ts", "event_id"}),
    "conversion": frozenset(
        {"type", "experiment", "unit_id", "metric", "value", "variant", "ts", "event_id"}
    ),
}
_ALLOWED_TYPED = {
    "exposure": _ALLOWED["exposure"] | {"type"},
    "metric": _ALLOWED["metric"] | {"type"},
    "conversion": _ALLOWED["conversion"],
}


class _Resolved:
    """An experiment reference resolved once per request."""

    __slots__ = ("entry", "error", "uid")

    def __init__(self, entry: EntryLike | None, error: str | None) -> None:
        self.entry = entry
        self.error = error
        self.uid = uuid.UUID(entry.experiment.id) if entry is not None and error is None else None


def _resolve(ref: str, lookup: Lookup) -> _Resolved:
    entry = lookup(ref)
    if entry is None:
        return _Resolved(None, f"unknown experiment {ref!r}: no experiment has this key or id")
    if entry.experiment.status == "draft":
        return _Resolved(
            entry,
            f"experiment {ref!r} is a draft: launch it before sending events "
            "(events of drafts would mix with the real run)",
        )
    return _Resolved(entry, None)


def parse_ts(raw: Any, now: datetime) -> datetime | str:
    """ISO-8601 or epoch milliseconds -> aware datetime, or the reason it is refused."""
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return "must be an ISO-8601 time (2026-01-31T12:00:00Z) or epoch milliseconds"
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        if not math.isfinite(raw):
            return "must be a finite number of epoch milliseconds"
        if raw < EPOCH_MS_MIN:
            return (
                "is before the year 2000: send epoch milliseconds "
                "(this looks like seconds), or an ISO-8601 time"
            )
        try:
            ts = datetime.fromtimestamp(raw / 1000.0, UTC)
        except (OverflowError, OSError, ValueError):
            return "is out of range"
    else:
        return "must be an ISO-8601 string or epoch milliseconds"
    if ts - now > FUTURE_LIMIT:
        return "is more than a day in the future"
    return ts


def _events_of(body: Any) -> tuple[list[Any], bool]:
    """The list of events in a body and whether it was a batch."""
    if isinstance(body, dict):
        if "events" in body:
            events = body["events"]
            if len(body) != 1:
                extra = sorted(k for k in body if k != "events")
                raise ValidationFailed(
                    "a batch body has only `events`; put each event's fields inside it",
                    fields={k: "unknown field" for k in extra},
                )
            if not isinstance(events, list):
                raise ValidationFailed(
                    "`events` must be a list of event objects", fields={"events": "not a list"}
                )
            if not events:
                raise ValidationFailed(
                    "`events` is empty: send at least one event", fields={"events": "empty list"}
                )
            if len(events) > MAX_EVENTS:
                raise PayloadTooLarge(
                    f"a batch holds at most {MAX_EVENTS} events; this one has {len(events)}: "
                    "split it into several requests",
                    fields={"events": f"more than {MAX_EVENTS} events"},
                )
            return events, True
        return [body], False
    raise ValidationFailed(
        'the body must be one event object or {"events": [...]}',
        fields={"body": "not an object"},
    )


def validate_events(
    body: Any, kind: EventKind, lookup: Lookup, now: datetime, nbytes: int = 0
) -> EventBatch:
    """Check every event of a body; all valid -> rows, else one 422 naming each bad event."""
    events, is_batch = _events_of(body)
    out = EventBatch(nbytes=nbytes + 200 * len(events))
    exposures, metrics = out.exposures, out.metrics
    errors: dict[str, str] = {}
    bad = 0
    resolved: dict[str, _Resolved] = {}
    for i, ev in enumerate(events):
        prefix = f"events[{i}]." if is_batch else ""
        if not isinstance(ev, dict):
            errors[f"events[{i}]" if is_batch else "body"] = "must be an event object"
            bad += 1
            continue
        errs: list[tuple[str, str]] = []
        # Which kind of event this is.
        typ: str = kind
        if kind == "typed":
            t = ev.get("type")
            if t is None:
                errs.append(("type", "field required: one of exposure, metric, conversion"))
            elif t not in _ALLOWED_TYPED:
                errs.append(("type", f"must be one of exposure, metric, conversion, not {t!r}"))
            else:
                typ = t
            allowed = _ALLOWED_TYPED.get(typ)
        else:
            allowed = _ALLOWED[typ]
        if allowed is not None:
            for k in ev:
                if k not in allowed:
                    errs.append((k, "unknown field"))
        # Fields every event has.
        ref = ev.get("experiment")
        res: _Resolved | None = None
        if ref is None:
            errs.append(("experiment", "field required"))
        elif not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
            errs.append(("experiment", "must be an experiment key or id (a non-empty string)"))
        else:
            res = resolved.get(ref)
            if res is None:
                res = resolved[ref] = _resolve(ref, lookup)
            if res.error is not None:
                errs.append(("experiment", res.error))
        unit: Any = ev.get("unit_id")
        if unit is None:
            errs.append(("unit_id", "field required"))
        elif not isinstance(unit, str) or not unit:
            errs.append(("unit_id", "must be a non-empty string"))
        elif len(unit) > MAX_UNIT_ID:
            errs.append(("unit_id", f"must be at most {MAX_UNIT_ID} characters"))
        raw_ts = ev.get("ts")
        ts: datetime | str = now if raw_ts is None else parse_ts(raw_ts, now)
        if isinstance(ts, str):
            errs.append(("ts", ts))
        eid: Any = ev.get("event_id")
        dedupe = True
        if eid is None:
            dedupe = False
        elif not isinstance(eid, str) or not eid:
            errs.append(("event_id", "must be a non-empty string"))
        elif len(eid) > MAX_EVENT_ID:
            errs.append(("event_id", f"must be at most {MAX_EVENT_ID} characters"))
        # The variant: required for exposures, optional for metrics.
        raw_variant = ev.get("variant")
        variant: int | None = None
        if raw_variant is None:
            if typ == "exposure":
                errs.append(("variant", "field required: the variant key the unit was served"))
        elif not isinstance(raw_variant, str):
            errs.append(("variant", "must be a variant key (a string)"))
        elif res is not None and res.entry is not None:
            variant = res.entry.variant_index.get(raw_variant)
            if variant is None:
                keys = ", ".join(res.entry.variant_index)
                errs.append((
                    "variant",
                    f"unknown variant {raw_variant!r} of experiment {ref!r} (its variants: {keys})",
                ))
        # Metric and value.
        metric = ""
        value = 1.0
        if typ != "exposure":
            m = ev.get("metric")
            if m is None:
                if typ == "conversion":
                    metric = "conversion"
                else:
                    errs.append(("metric", "field required"))
            elif not isinstance(m, str) or not _SLUG.match(m):
                errs.append((
                    "metric",
                    "must be a metric name: lower-case letters, digits, '_' or '-', "
                    "starting with a letter or digit, at most 64 characters",
                ))
            else:
                metric = m
            v = ev.get("value")
            if v is None:
                if typ != "conversion":
                    errs.append(("value", "field required"))
            elif isinstance(v, bool) or not isinstance(v, int | float):
                errs.append(("value", "must be a number"))
            else:
                value = float(v)
                if not math.isfinite(value):
                    errs.append(("value", "must be a finite number (not NaN or infinity)"))
        if errs:
            bad += 1
            for name, msg in errs:
                errors.setdefault(prefix + name, msg)
            continue
        if errors:
            continue  # the batch is refused anyway: only keep looking for errors
        assert res is not None and res.uid is not None and isinstance(ts, datetime)
        event_id: str = eid if dedupe else server_event_id()
        if typ == "exposure":
            assert variant is not None
            exposures.append((res.uid, unit, variant, ts, event_id, dedupe))
        else:
            metrics.append((res.uid, unit, metric, value, variant, ts, event_id, dedupe))
    if errors:
        raise _refusal(errors, bad, len(events), is_batch)
    return out


def _refusal(errors: Mapping[str, str], bad: int, total: int, is_batch: bool) -> ValidationFailed:
    shown = dict(list(errors.items())[:MAX_FIELDS_SHOWN])
    summary = "; ".join(f"{k}: {v}" for k, v in list(shown.items())[:3])
    if is_batch:
        more = f" (first {MAX_FIELDS_SHOWN} problems listed)" if len(errors) > MAX_FIELDS_SHOWN else ""
        msg = (
            f"{bad} of {total} events are invalid, so none of the batch was stored{more}: {summary}"
        )
    else:
        msg = f"invalid event, nothing stored: {summary}"
    return ValidationFailed(msg, fields=shown, extra={"invalid_events": bad})
