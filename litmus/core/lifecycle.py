"""The experiment lifecycle as pure functions: each returns the changed experiment or raises.

The refusals are LitmusErrors, answered as they are by whoever asked (a person through the API,
or a service acting on its own), with no translation on the way.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from litmus.core.errors import Conflict, ValidationFailed
from litmus.core.models import Experiment


class TransitionError(Conflict):
    """An action that the experiment's current status does not allow (409, naming the status)."""

    def __init__(self, message: str, experiment_status: str) -> None:
        super().__init__(message, extra={"status": experiment_status})
        # Not `status`: on a LitmusError that is the HTTP status.
        self.experiment_status = experiment_status


class FrozenVariantsError(Conflict):
    """A change after launch to what the analysis or the assignment rests on (409)."""


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, fields={field: message})


def launch(exp: Experiment, ramp: float | None, now: datetime) -> Experiment:
    """Launch a draft or paused experiment, or update a running one's ramp."""
    if exp.status not in ("draft", "running", "paused"):
        raise TransitionError(
            f"cannot launch: experiment is {exp.status}; only draft, paused or running "
            "experiments can be launched or have their ramp updated",
            exp.status,
        )
    new_ramp = exp.ramp if ramp is None else ramp
    if not 0.0 < new_ramp <= 1.0:
        raise _invalid("ramp", "ramp must be greater than 0 and at most 1")
    return replace(
        exp,
        status="running",
        ramp=new_ramp,
        launched_at=exp.launched_at or now,
    )


def pause(exp: Experiment) -> Experiment:
    """Pause a running experiment: assignment answers `paused`."""
    if exp.status != "running":
        raise TransitionError(
            f"cannot pause: experiment is {exp.status}; only running experiments can be paused",
            exp.status,
        )
    return replace(exp, status="paused")


def stop(exp: Experiment, winner: str | None, now: datetime) -> Experiment:
    """Stop for good, optionally naming the winner every unit gets from then on."""
    if exp.status == "stopped":
        raise TransitionError("cannot stop: experiment is already stopped", exp.status)
    if winner is not None and winner not in {v.key for v in exp.variants}:
        raise _invalid("winner", f"winner {winner!r} is not one of this experiment's variants")
    return replace(exp, status="stopped", winner=winner, stopped_at=now)


def check_deletable(exp: Experiment) -> None:
    """Only drafts can be deleted."""
    if exp.status != "draft":
        raise TransitionError(
            f"cannot delete: experiment is {exp.status}; only drafts can be deleted "
            "(stop it instead)",
            exp.status,
        )


def check_editable(old: Experiment, new: Experiment) -> None:
    """Refuse edits that the status forbids: anything after stop, variant keys after launch."""
    if old.status == "stopped":
        raise TransitionError("cannot edit: experiment is stopped", old.status)
    if old.status != "draft":
        old_keys = [v.key for v in old.variants]
        new_keys = [v.key for v in new.variants]
        if old_keys != new_keys:
            raise FrozenVariantsError(
                f"variant keys and count are frozen once an experiment has launched "
                f"(it is {old.status}): changing them would corrupt the analysis; "
                "only a variant's config and name may change"
            )
        if old.control.key != new.control.key:
            raise FrozenVariantsError(
                f"the control variant cannot change once an experiment has launched (it is "
                f"{old.status}): every comparison so far is against {old.control.key!r}"
            )
        if old.allocation == "fixed" and [v.weight for v in old.variants] != [
            v.weight for v in new.variants
        ]:
            raise FrozenVariantsError(
                f"weights cannot change once an experiment has launched (it is {old.status}): "
                "units would move between variants and the split check (SRM) would fail; "
                "stop it and start a new experiment instead"
            )
        if old.bandit is not None and new.bandit is not None and (
            old.bandit.reward_metric != new.bandit.reward_metric
            or old.bandit.reward_type != new.bandit.reward_type
            or old.bandit.goal != new.bandit.goal
        ):
            raise FrozenVariantsError(
                f"a bandit's reward metric, type and goal cannot change once it has launched "
                f"(it is {old.status}): the posteriors so far were built on them"
            )
        old_cov = list(old.metrics.get("covariates") or ())
        new_cov = list(new.metrics.get("covariates") or ())
        if new_cov[:len(old_cov)] != old_cov:
            raise FrozenVariantsError(
                f"declared covariates can only be added to once an experiment has launched (it "
                f"is {old.status}): exposures store them by position, so keep "
                f"{', '.join(old_cov)} first and in this order")
        if old.key != new.key or old.salt != new.salt:
            raise FrozenVariantsError(
                f"key and salt cannot change once an experiment has launched (it is {old.status}): "
                "model routers use the key and the salt decides every unit's variant"
            )
        if old.allocation != new.allocation:
            raise FrozenVariantsError(
                f"allocation cannot change once an experiment has launched (it is {old.status})"
            )


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field-level changes between two JSON forms, ignoring bookkeeping fields."""
    skip = {"version", "updated_at"}
    out: dict[str, dict[str, Any]] = {}
    for k in sorted(set(before) | set(after)):
        if k in skip:
            continue
        if before.get(k) != after.get(k):
            out[k] = {"before": before.get(k), "after": after.get(k)}
    return out
