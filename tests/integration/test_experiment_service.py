"""The experiment use cases called as a guardrail or a bandit would: no HTTP request involved."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from litmus.api.experiments import DEFINITION
from litmus.api.schemas import ExperimentIn, to_experiment
from litmus.core.lifecycle import FrozenVariantsError, TransitionError
from litmus.core.models import Experiment
from litmus.errors import Conflict, LitmusError, ValidationFailed
from litmus.keys import POOL, REGISTRY
from litmus.services import experiments as service
from tests.conftest import experiment_payload

GUARDRAIL = "guardrail:latency_p99"


def draft(**over: Any) -> Experiment:
    return to_experiment(ExperimentIn.model_validate(experiment_payload(**over)))


async def test_a_guardrail_pauses_through_the_same_path_and_is_audited(
    client: TestClient, db: asyncpg.Connection
) -> None:
    pool, registry = client.app[POOL], client.app[REGISTRY]
    exp = await service.create(pool, registry, draft(key="svc"), actor="admin",
                               key_from_name=False)
    await service.launch(pool, registry, exp.id, 0.5, actor="admin")
    # Without NOTIFY only the service's own reload can tell this process's registry.
    await db.execute("ALTER TABLE experiments DISABLE TRIGGER experiments_notify")
    paused = await service.pause(pool, registry, "svc", actor=GUARDRAIL)
    assert paused.status == "paused" and paused.version == 3
    entry = registry.get("svc")
    assert entry is not None and entry.experiment.status == "paused"
    exp_id, entries = await service.history(pool, "svc")
    assert exp_id == exp.id
    assert [(h["actor"], h["action"]) for h in entries] == [
        (GUARDRAIL, "pause"), ("admin", "launch"), ("admin", "create")]
    assert entries[0]["changes"]["status"] == {"before": "running", "after": "paused"}


async def test_refusals_are_litmus_errors_and_change_nothing(client: TestClient) -> None:
    pool, registry = client.app[POOL], client.app[REGISTRY]
    exp = await service.create(pool, registry, draft(key="svc"), actor="admin",
                               key_from_name=False)
    with pytest.raises(TransitionError) as refused:
        await service.pause(pool, registry, exp.id, actor=GUARDRAIL)
    assert isinstance(refused.value, Conflict) and refused.value.status == 409
    assert refused.value.experiment_status == "draft"
    assert refused.value.body()["error"]["status"] == "draft"
    with pytest.raises(ValidationFailed) as invalid:
        await service.stop(pool, registry, exp.id, "model_z", actor=GUARDRAIL)
    assert invalid.value.fields == {"winner": invalid.value.message}
    await service.launch(pool, registry, exp.id, 1.0, actor="admin")
    with pytest.raises(FrozenVariantsError) as frozen:
        await service.patch(pool, registry, exp.id, {"variants": [
            {"key": "model_a", "weight": 0.5}, {"key": "model_x", "weight": 0.5}]},
            definition=DEFINITION, actor="admin", expected_version=None)
    assert isinstance(frozen.value, LitmusError) and frozen.value.status == 409
    with pytest.raises(TransitionError):
        await service.delete(pool, registry, exp.id, actor="admin")
    _, entries = await service.history(pool, exp.id)
    assert [h["action"] for h in entries] == ["launch", "create"]
    assert (await service.get(pool, exp.id)).version == 2


async def test_a_key_from_the_name_moves_on_a_given_key_conflicts(client: TestClient) -> None:
    pool, registry = client.app[POOL], client.app[REGISTRY]
    first = await service.create(pool, registry, draft(), actor="admin", key_from_name=True)
    second = await service.create(pool, registry, draft(), actor="admin", key_from_name=True)
    assert (first.key, second.key) == ("ranker-v2", "ranker-v2-2")
    with pytest.raises(Conflict):
        await service.create(pool, registry, draft(key="ranker-v2"), actor="admin",
                             key_from_name=False)
    assert registry.get("ranker-v2-2") is not None


def test_the_patch_merge_goes_one_level_into_settings() -> None:
    current = draft(allocation="bandit", bandit={"reward_metric": "conversion"})
    editable = DEFINITION.editable(current)
    merged = service.merge(editable, {"bandit": {"auto_stop": True},
                                      "variants": editable["variants"][:2]}, current)
    assert merged["bandit"] == {**editable["bandit"], "auto_stop": True}
    assert merged["metrics"] == editable["metrics"]
    assert merged["allocation"] == "bandit"
    assert service.merge(editable, {"metrics": {"guardrails": ["latency"]}}, current)[
        "metrics"] == {**editable["metrics"], "guardrails": ["latency"]}
