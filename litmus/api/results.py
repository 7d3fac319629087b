"""Results: the latest stored snapshot (never computed on the request path) and its CSV."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from litmus.api.requests import json_response, parse, read_json
from litmus.api.schemas import CounterfactualIn, ResultsQuery, UnitsQuery
from litmus.core.counterfactual import Estimate, PropensitySums, logged_value, policy_value
from litmus.core.snapshot import lift_csv
from litmus.db import experiments as db_experiments
from litmus.db import results as db
from litmus.errors import NotFound, ValidationFailed
from litmus.keys import POOL, RECOMPUTE
from litmus.services import segments

WEIGHT_SUM_TOLERANCE = 1e-6

routes = web.RouteTableDef()


async def _snapshot(request: web.Request) -> dict[str, object]:
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    stored = await db.load_snapshot(pool, exp.id)
    if stored is None:
        interval = request.app[RECOMPUTE].interval_s
        err = NotFound(
            f"no results yet for {exp.key!r} ({exp.status}): snapshots are computed every "
            f"{interval:g} s once an experiment has launched",
        )
        err.code = "no_results"
        raise err
    return stored[1]


@routes.get("/api/v1/experiments/{id}/results", name="results.get")
async def results(request: web.Request) -> web.Response:
    """The latest results snapshot; `computed_at` says when it was computed. With
    `?segment=ATTRIBUTE`, also `segments`: the results of each segment of that exposure
    attribute, read from the raw events now (README, "Segments")."""
    query = parse(ResultsQuery, dict(request.query))
    snap = await _snapshot(request)
    if query.segment is None:
        return json_response(snap)
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    known = await segments.keys(pool, exp)
    if query.segment not in known:
        raise ValidationFailed(
            f"no exposure of {exp.key!r} carries the attribute {query.segment!r} "
            f"(its exposures carry: {', '.join(known) if known else 'no attributes'})",
            fields={"segment": "unknown attribute"})
    return json_response({**snap, "segments": await segments.segment_results(
        pool, exp, query.segment, snap)})


@routes.get("/api/v1/experiments/{id}/results/segments", name="results.segment_keys")
async def segment_keys(request: web.Request) -> web.Response:
    """The exposure attributes this experiment's results can be broken down by."""
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    return json_response({"experiment_id": exp.id, "keys": await segments.keys(pool, exp)})


@routes.get("/api/v1/experiments/{id}/results/history", name="results.history")
async def results_history(request: web.Request) -> web.Response:
    """Lift over time: per timeline bucket, each lift row's estimate and intervals as the
    recompute saw them (the latest 500 points, oldest first; none before the first snapshot)."""
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    return json_response({"experiment_id": exp.id, "experiment_key": exp.key,
                          "points": await db.lift_history(pool, exp.id)})


@routes.get("/api/v1/experiments/{id}/results.csv", name="results.csv")
async def results_csv(request: web.Request) -> web.Response:
    """The lift table as CSV."""
    snap = await _snapshot(request)
    name = f"{snap.get('experiment_key') or request.match_info['id']}-lift.csv"
    return web.Response(
        text=lift_csv(snap), content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _estimate(e: Estimate) -> dict[str, object]:
    return {"value": e.value, "se": e.se, "ci": list(e.ci) if e.ci else None,
            "anytime_ci": list(e.anytime_ci) if e.anytime_ci else None}


@routes.post("/api/v1/experiments/{id}/counterfactual", name="results.counterfactual")
async def counterfactual(request: web.Request) -> web.Response:
    """What each target policy would have scored on the logged traffic: IPS, SNIPS and DR
    from the latest snapshot's propensity sums (README, "What if")."""
    body = parse(CounterfactualIn, await read_json(request))
    snap: dict[str, Any] = await _snapshot(request)
    variants = list(snap["exposures"]["variants"])
    fields: dict[str, str] = {}
    for name, policy in body.policies.items():
        for v in policy:
            if v not in variants:
                fields[f"policies.{name}.{v}"] = (f"unknown variant {v!r} (the variants: "
                                                  f"{', '.join(variants)})")
        total = math.fsum(policy.values())
        if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            fields[f"policies.{name}"] = f"weights must sum to 1; they sum to {total:.6g}"
    prop = snap.get("propensity") or {}
    per = (prop.get("metrics") or {}).get(body.metric)
    if per is None:
        known = sorted(prop.get("metrics") or {})
        fields["metric"] = (f"no propensity data for metric {body.metric!r}"
                            + (f" (metrics with data: {', '.join(known)})" if known else
                               ": no exposure with a known probability yet"))
    if fields:
        raise ValidationFailed(f"invalid counterfactual request: {next(iter(fields.values()))}",
                               fields=fields)
    assert per is not None
    sums = {k: PropensitySums(**v["sums"]) for k, v in per.items()}
    out = {}
    for name, policy in body.policies.items():
        pv = policy_value(sums, policy)
        out[name] = {"ips": _estimate(pv.ips), "snips": _estimate(pv.snips),
                     "dr": _estimate(pv.dr), "ess": pv.ess, "support": pv.support}
    return json_response({
        "metric": body.metric, "computed_at": snap["computed_at"],
        "units": int(sum(s.n for s in sums.values())),
        "forced_units": prop.get("forced_units", 0),
        "server_filled_units": prop.get("server_filled_units", 0),
        "logged_value": logged_value(sums), "policies": out,
    })


@routes.get("/api/v1/experiments/{id}/units.csv", name="results.units_csv")
async def units_csv(request: web.Request) -> web.StreamResponse:
    """One row per exposed unit, streamed from PostgreSQL: the logged bandit feedback that
    off-policy tools read (unit_id, variant, probability, first_exposure_at, value)."""
    query = parse(UnitsQuery, dict(request.query))
    pool = request.app[POOL]
    exp = await db_experiments.require(pool, request.match_info["id"])
    keys = [v.key for v in exp.variants]
    resp = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{exp.key}-units-{query.metric}.csv"'})
    await resp.prepare(request)
    await resp.write(b"unit_id,variant,probability,first_exposure_at,value\n")
    async for chunk in db.unit_rows(pool, exp.id, query.metric, keys):
        await resp.write(chunk)
    await resp.write_eof()
    return resp
