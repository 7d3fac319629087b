"""Event payloads: pydantic models (documentation) and the fast validator the endpoints use.

Pydantic per event costs ~10x the hand-written checks below on 10,000-event batches (see
docs/PERFORMANCE.md), so the endpoints validate orjson-parsed dicts here and give the same
kind of errors: every bad event named by index and field (`events[3].value`), one clear
reason each, and nothing stored unless every event is valid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from litmus.api.assign import MAX_UNIT_ID
from litmus.api.attributes import MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES, attributes_text
from litmus.api.covariates import Cells, covariate_cells, declared_positions
from litmus.api.schemas import SLUG, Number
from litmus.core.models import Experiment
from litmus.core.unitfold import MAX_COVARIATES
from litmus.db.events import NO_COVARIATES
from litmus.errors import PayloadTooLarge, ValidationFailed
from litmus.services.ingest import (
    EXPOSURE,
    METRIC,
    PG_EPOCH_UNIX_US,
    EventBatch,
    Micros,
    server_event_id,
    to_micros,
)

MAX_EVENTS = 10_000
NUL_MESSAGE = "must not contain NUL (U+0000) characters: PostgreSQL cannot store them"
MAX_EVENT_ID = 128
MAX_REF = 200
MAX_FIELDS_SHOWN = 1000
# The one window of accepted event times, for ISO-8601 strings and epoch milliseconds alike:
# from 2000-01-01T00:00:00Z (epoch milliseconds before that are almost surely seconds; the
# writer's time value counts from there, so parse_ts refuses a negative one) to one day past
# the server's clock (client clocks run ahead). The OpenAPI document states it (TS_DOC).
EPOCH_MS_MIN = PG_EPOCH_UNIX_US // 1000
FUTURE_LIMIT_US = 86_400 * 1_000_000
TS_WINDOW = "accepted times are 2000-01-01T00:00:00Z to 24 hours after the server's clock"
TS_DOC = (
    "When it happened: an ISO-8601 time (without a zone: UTC) or epoch milliseconds as a JSON "
    f"number; {TS_WINDOW}, for both forms. Default: when the server received it."
)
_SLUG = re.compile(SLUG)

EventKind = Literal["exposure", "metric", "typed"]


# -- pydantic models: the documented shape (OpenAPI), not used on the hot path ----------------

def _valid_ts(value: Any) -> Any:
    """The fast path's own check (parse_ts), so that model and endpoint agree on every time."""
    why = parse_ts(value, to_micros(datetime.now(UTC))[0])
    if type(why) is str:
        raise PydanticCustomError("ts", "{why}", {"why": why})
    return value


Ts = Annotated[
    datetime | Annotated[float, Field(ge=EPOCH_MS_MIN, allow_inf_nan=False)],
    BeforeValidator(_valid_ts),
]


PROBABILITY_DOC = ("The probability with which the served variant was chosen, in (0, 1]: the "
                   "assign answer's `probability`. Without it the server stores the variant's "
                   "weight in the configuration current when the exposure arrives.")
PROBABILITY_ERROR = ("must be the probability the variant was served with: a number in (0, 1] "
                     "(the assign answer's `probability`)")


COVARIATES_DOC = ("Pre-experiment numbers about the unit, for variance reduction (CUPED): up to "
                  f"{MAX_COVARIATES}, each named in the experiment's `metrics.covariates`, "
                  "e.g. {\"pre_sessions\": 12}. A unit's covariates are its first exposure's.")
Covariates = dict[Annotated[str, StringConstraints(pattern=SLUG)],
                  Annotated[Number, Field(allow_inf_nan=False)]]

ATTRIBUTES_DOC = (f"Segment attributes of the unit: up to {MAX_ATTRIBUTES} names with string "
                  "values, e.g. {\"country\": \"DE\", \"device\": \"ios\"}, for per-segment "
                  "results (`GET .../results?segment=country`). A unit's attributes are its "
                  "first exposure's.")
Attributes = dict[Annotated[str, StringConstraints(pattern=SLUG)],
                  Annotated[str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_VALUE,
                                                   pattern=r"^[^\x00]*$")]]


class ExposureEventIn(BaseModel):
    """An exposure: this unit was served this variant of this experiment."""

    model_config = ConfigDict(extra="forbid")
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    variant: Annotated[str, StringConstraints(min_length=1)]
    ts: Ts | None = Field(default=None, description=TS_DOC)
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None
    probability: Annotated[Number, Field(gt=0, le=1, allow_inf_nan=False)] | None = Field(
        default=None, description=PROBABILITY_DOC)
    covariates: Covariates | None = Field(default=None, max_length=MAX_COVARIATES,
                                          description=COVARIATES_DOC)
    attributes: Attributes | None = Field(default=None, max_length=MAX_ATTRIBUTES,
                                          description=ATTRIBUTES_DOC)


class MetricEventIn(BaseModel):
    """A metric value for a unit (a bandit's reward is a metric)."""

    model_config = ConfigDict(extra="forbid")
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    metric: Annotated[str, StringConstraints(pattern=SLUG)]
    value: Annotated[Number, Field(allow_inf_nan=False)]
    variant: Annotated[str, StringConstraints(min_length=1)] | None = None
    ts: Ts | None = Field(default=None, description=TS_DOC)
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None


class TypedEventIn(BaseModel):
    """`POST /api/v1/events`: `type` picks exposure, metric or conversion (metric, value 1)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["exposure", "metric", "conversion"]
    experiment: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REF)]
    unit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_UNIT_ID)]
    variant: Annotated[str, StringConstraints(min_length=1)] | None = None
    metric: Annotated[str, StringConstraints(pattern=SLUG)] | None = None
    value: Annotated[Number, Field(allow_inf_nan=False)] | None = None
    ts: Ts | None = Field(default=None, description=TS_DOC)
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_ID)] | None = None
    probability: Annotated[Number, Field(gt=0, le=1, allow_inf_nan=False)] | None = Field(
        default=None, description=PROBABILITY_DOC + " Exposures only.")
    covariates: Covariates | None = Field(default=None, max_length=MAX_COVARIATES,
                                          description=COVARIATES_DOC + " Exposures only.")
    attributes: Attributes | None = Field(default=None, max_length=MAX_ATTRIBUTES,
                                          description=ATTRIBUTES_DOC + " Exposures only.")


class EventsAccepted(BaseModel):
    """202: the events are durable (or, with `?wait=false`, accepted into the buffer)."""

    accepted: int = Field(description="Events stored (`wait=false`: buffered), not counting "
                                      "duplicates; `exposures` + `metrics`")
    exposures: int
    metrics: int
    duplicates: int = Field(description=(
        "Events not stored because their `event_id` repeats one of the same experiment and "
        "type (exposure, or metric: a conversion is a metric) earlier in the request or "
        "already stored. With `wait=false` only repeats within the request are counted."))
    durable: bool


# -- the fast path ---------------------------------------------------------------------------

class EntryLike(Protocol):
    """What validation needs from a registry entry."""

    @property
    def experiment(self) -> Experiment: ...

    @property
    def variant_index(self) -> dict[str, int]: ...

    @property
    def weights(self) -> dict[str, float]: ...


Lookup = Callable[[str], EntryLike | None]

_ALLOWED = {
    "exposure": frozenset({"experiment", "unit_id", "variant", "ts", "event_id", "probability",
                           "covariates", "attributes"}),
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


def _served_weight(entry: EntryLike, variant: str) -> float:
    """The weight the current configuration gives the variant (1 for a stopped experiment's
    winner, which everyone gets): what an exposure sent without a probability stores."""
    exp = entry.experiment
    if exp.status == "stopped" and exp.winner is not None:
        return 1.0
    return float(entry.weights.get(variant, 0.0))


class _Resolved:
    """An experiment reference resolved once per request."""

    __slots__ = ("covariates", "entry", "error", "uid")

    def __init__(self, entry: EntryLike | None, error: str | None) -> None:
        self.entry = entry
        self.error = error
        self.uid = entry.experiment.id if entry is not None and error is None else None
        # Its declared covariates' positions, looked up once per request rather than per event.
        self.covariates = ({} if entry is None
                           else declared_positions(entry.experiment.metrics))


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


def parse_ts(raw: Any, now_us: int) -> Micros | str:
    """ISO-8601 or epoch milliseconds -> the writer's time value, or why it is refused."""
    if type(raw) is str:
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            return ("must be an ISO-8601 time (2026-01-31T12:00:00Z) or epoch milliseconds "
                    "as a JSON number")
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        try:
            ts = to_micros(dt)
        except OverflowError:
            return f"is out of range: {TS_WINDOW}"
        if ts[0] < 0:
            return f"is before 2000-01-01T00:00:00Z: {TS_WINDOW}"
    elif type(raw) is int or type(raw) is float:
        if not math.isfinite(raw):
            return "must be a finite number of epoch milliseconds"
        if raw < EPOCH_MS_MIN:
            return (f"is before 2000-01-01T00:00:00Z: {TS_WINDOW} "
                    "(this looks like seconds: send epoch milliseconds)")
        if raw > (now_us + PG_EPOCH_UNIX_US + FUTURE_LIMIT_US) / 1000:
            # Before converting: 1e308 ms overflows to infinity, which round() refuses.
            return f"is more than a day in the future: {TS_WINDOW}"
        ts = (round(raw * 1000) - PG_EPOCH_UNIX_US,)
    else:
        return "must be an ISO-8601 string or epoch milliseconds as a JSON number"
    if ts[0] - now_us > FUTURE_LIMIT_US:
        return f"is more than a day in the future: {TS_WINDOW}"
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
    exposures, metrics, claims = out.exposures, out.metrics, out.claims
    errors: dict[str, str] = {}
    bad = 0
    resolved: dict[str, _Resolved] = {}
    now_ts = to_micros(now)
    now_us = now_ts[0]
    fixed: frozenset[str] | None = None if kind == "typed" else _ALLOWED[kind]
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            errors[f"events[{i}]" if is_batch else "body"] = "must be an event object"
            bad += 1
            continue
        errs: list[tuple[str, str]] | None = None
        # Which kind of event this is, and the fields it may have.
        typ: str
        if fixed is not None:
            typ, allowed = kind, fixed
        else:
            t = ev.get("type")
            # type() first: a {} or [] type is unhashable.
            if type(t) is str and t in _ALLOWED_TYPED:
                typ, allowed = t, _ALLOWED_TYPED[t]
            else:
                typ, allowed = "", _ALLOWED_TYPED["conversion"]
                errs = [("type", "field required: one of exposure, metric, conversion"
                         if t is None else f"must be one of exposure, metric, conversion, not {t!r}")]
        if not ev.keys() <= allowed:
            errs = errs or []
            errs += [(k, "unknown field") for k in ev if k not in allowed]
        # Fields every event has.
        ref = ev.get("experiment")
        res = resolved.get(ref) if type(ref) is str else None
        if res is None:
            if type(ref) is str and ref and len(ref) <= MAX_REF:
                res = resolved[ref] = _resolve(ref, lookup)
            else:
                errs = errs or []
                errs.append(("experiment", "field required" if ref is None else
                             "must be an experiment key or id (a non-empty string)"))
        if res is not None and res.error is not None:
            errs = errs or []
            errs.append(("experiment", res.error))
        unit: Any = ev.get("unit_id")
        if type(unit) is not str or not unit or len(unit) > MAX_UNIT_ID or "\x00" in unit:
            errs = errs or []
            errs.append(("unit_id", "field required" if unit is None else
                         "must be a non-empty string" if type(unit) is not str or not unit else
                         f"must be at most {MAX_UNIT_ID} characters" if len(unit) > MAX_UNIT_ID
                         else NUL_MESSAGE))
        raw_ts = ev.get("ts")
        ts: Micros | str = now_ts if raw_ts is None else parse_ts(raw_ts, now_us)
        if type(ts) is str:
            errs = errs or []
            errs.append(("ts", ts))
        eid: Any = ev.get("event_id")
        if eid is not None and (type(eid) is not str or not eid or len(eid) > MAX_EVENT_ID
                                or "\x00" in eid):
            errs = errs or []
            errs.append(("event_id", "must be a non-empty string" if type(eid) is not str or not eid
                         else f"must be at most {MAX_EVENT_ID} characters" if len(eid) > MAX_EVENT_ID
                         else NUL_MESSAGE))
        # The variant: required for exposures, optional for metrics.
        raw_variant = ev.get("variant")
        variant: int | None = None
        if raw_variant is not None:
            if type(raw_variant) is not str:
                errs = errs or []
                errs.append(("variant", "must be a variant key (a string)"))
            elif res is not None and res.entry is not None:
                variant = res.entry.variant_index.get(raw_variant)
                if variant is None:
                    keys = ", ".join(res.entry.variant_index)
                    errs = errs or []
                    errs.append(("variant", f"unknown variant {raw_variant!r} of experiment "
                                            f"{ref!r} (its variants: {keys})"))
        elif typ == "exposure":
            errs = errs or []
            errs.append(("variant", "field required: the variant key the unit was served"))
        # The probability behind an exposure: given, or the served variant's weight now.
        prob: float | None = None
        if typ == "exposure":
            raw_p = ev.get("probability")
            if raw_p is not None:
                if (type(raw_p) is float or type(raw_p) is int) and 0 < raw_p <= 1:
                    prob = float(raw_p)
                else:
                    errs = errs or []
                    errs.append(("probability", PROBABILITY_ERROR))
            elif variant is not None and res is not None and res.entry is not None:
                prob = -_served_weight(res.entry, str(raw_variant))
        cov: Cells | None = None
        raw_cov = ev.get("covariates") if typ == "exposure" else None
        if raw_cov is not None:
            cov, why = covariate_cells(raw_cov, res.covariates if res is not None else {})
            if why is not None:
                errs = errs or []
                errs.append(("covariates", why))
        attrs: str | None = None
        raw_attrs = ev.get("attributes") if typ == "exposure" else None
        if raw_attrs is not None:
            attrs, why = attributes_text(raw_attrs)
            if why is not None:
                errs = errs or []
                errs.append(("attributes", why))
        # Metric and value.
        metric = "conversion"
        value = 1.0
        if typ != "exposure":
            m = ev.get("metric")
            if m is not None:
                if type(m) is str and _SLUG.fullmatch(m):
                    metric = m
                else:
                    errs = errs or []
                    errs.append(("metric", "must be a metric name: lower-case letters, digits, "
                                           "'_' or '-', starting with a letter or digit, at most "
                                           "64 characters"))
            elif typ == "metric":
                errs = errs or []
                errs.append(("metric", "field required"))
            v = ev.get("value")
            if v is not None:
                if type(v) is float or (type(v) is int):
                    value = float(v)
                    if not math.isfinite(value):
                        errs = errs or []
                        errs.append(("value", "must be a finite number (not NaN or infinity)"))
                else:
                    errs = errs or []
                    errs.append(("value", "must be a number"))
            elif typ == "metric":
                errs = errs or []
                errs.append(("value", "field required"))
        if errs:
            bad += 1
            prefix = f"events[{i}]." if is_batch else ""
            for name, msg in errs:
                errors.setdefault(prefix + name, msg)
            continue
        if errors:
            continue  # the batch is refused anyway: only keep looking for errors
        assert res is not None and res.uid is not None and type(ts) is tuple
        uid = res.uid
        if typ == "exposure":
            assert variant is not None
            if eid is None:
                eid = server_event_id()
            else:
                claims.append((uid, EXPOSURE, eid))
            c = cov or NO_COVARIATES
            # By index rather than *c: a tuple built in one step, no list in between.
            exposures.append((uid, unit, variant, ts, eid, prob, c[0], c[1], c[2], c[3], c[4],
                              attrs))
        else:
            if eid is None:
                eid = server_event_id()
            else:
                claims.append((uid, METRIC, eid))
            metrics.append((uid, unit, metric, value, variant, ts, eid))
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
