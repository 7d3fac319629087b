"""The seed's live bandit simulation against a real server: converges on the best model, the
server's results agree with its last line, and failures are one clear line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN, ADMIN_SECRET
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "live_bandit_simulation.py"


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    s = ServerProcess(database_url, tmp_path / "srv").start()
    yield s
    s.stop()


def test_simulation_converges_and_matches_server(server: ServerProcess) -> None:
    proc = run("--base-url", server.base_url, "--token", ADMIN_SECRET, "--json", "--seed", "7",
               "--users-per-second", "400", "--snapshot-every", "1", "--update-interval", "1",
               "--max-seconds", "180")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [e["event"] for e in lines]
    assert events[0] == "started" and "live_snapshot" in events and "converged" in events
    snaps = [e for e in lines if e["event"] == "live_snapshot" and e.get("exposures")]
    assert snaps and set(snaps[-1]["exposures"]) == {f"model_{c}" for c in "abcde"}
    last = next(e for e in lines if e["event"] == "converged")
    assert last["winner"] == "model_e"
    assert last["win_probability"] >= 0.95
    req = urllib.request.Request(
        f"{server.base_url}/api/v1/experiments/{last['experiment_id']}/results", headers=ADMIN)
    with urllib.request.urlopen(req) as r:
        snap = json.loads(r.read())
    band = snap["bandit"]
    assert band["converged"] is True
    assert band["converged_variant"] == last["winner"]
    assert band["converged_at"] == last["converged_at"]
    assert snap["status"] == "running"  # left for a person to stop
    # Every exposure carried the assign answer's probability, and the counterfactual line gives
    # each model-alone policy's DR estimate with a 95% interval beside the simulated rate.
    cf = next(e for e in lines if e["event"] == "counterfactual")
    assert events.index("counterfactual") > events.index("converged")
    assert cf["server_filled_units"] == 0 and cf["forced_units"] == 0 and cf["units"] > 0
    assert set(cf["policies"]) == {f"model_{c}" for c in "abcde"}
    for key, rate in zip("abcde", (0.04, 0.05, 0.06, 0.07, 0.10), strict=True):
        p = cf["policies"][f"model_{key}"]
        assert p["true_rate"] == rate and p["ci"][0] <= p["dr"] <= p["ci"][1]
        assert p["covered"] == (p["ci"][0] <= rate <= p["ci"][1])
    print(f"\ncounterfactual line: {cf}")
    # Each 95% interval covers about 95% of the time, less for an arm the bandit starved to a
    # few conversions in a run this short (seen: 0.0037 [-0.0010, 0.0084] for 0.04, ESS 76, and
    # a run with 2 of 5 covered): coverage itself is measured offline over 1,000 runs
    # (tests/unit/test_counterfactual_coverage.py). Here: the winner, served to most units,
    # has an anytime interval around its true rate (99.9% of runs offline), and a run where
    # four of five 95% intervals miss would be a bug, not chance.
    e = cf["policies"]["model_e"]
    assert e["anytime_ci"][0] <= 0.10 <= e["anytime_ci"][1], e
    assert cf["covered"] >= 2
    req = urllib.request.Request(f"{server.base_url}/api/v1/experiments/"
                                 f"{last['experiment_id']}/units.csv?metric=conversion",
                                 headers=ADMIN)
    with urllib.request.urlopen(req) as r:
        rows = r.read().decode().splitlines()
    assert rows[0] == "unit_id,variant,probability,first_exposure_at,value"
    probs = [float(row.split(",")[2]) for row in rows[1:]]
    assert len(probs) >= cf["units"] and all(0 < p <= 1 for p in probs)
    assert min(probs) < 0.2  # weights the bandit moved, not only the equal split of burn-in
    # The human-readable form starts each line with the event name too.
    assert proc.stderr == ""


def test_unreachable_server_is_one_clear_line() -> None:
    proc = run("--base-url", f"http://127.0.0.1:{free_port()}", "--token", "x" * 20, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot reach Litmus")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_refused_token_is_one_clear_line(server: ServerProcess) -> None:
    proc = run("--base-url", server.base_url, "--token", "not-the-token-123", timeout=60)
    assert proc.returncode == 2
    assert "refused the token" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_flags_are_usage_errors() -> None:
    proc = run("--rates", "0.1", "--token", "x" * 20, timeout=60)
    assert proc.returncode == 2
    assert "--rates" in proc.stderr and "Traceback" not in proc.stderr


def test_router_scenario_converges_on_the_best_model_within_the_bounds(
        server: ServerProcess) -> None:
    """The router scenario: quality alone would pick model_d, but it breaks the cost and p95
    latency bounds; the server converges on model_c and reports model_d infeasible."""
    proc = run("--base-url", server.base_url, "--token", ADMIN_SECRET, "--json", "--seed", "7",
               "--scenario", "router", "--users-per-second", "400", "--snapshot-every", "1",
               "--update-interval", "1", "--max-seconds", "180")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    started = lines[0]
    assert started["event"] == "started" and started["expected_winner"] == "model_c"
    last = next(e for e in lines if e["event"] == "converged")
    assert last["winner"] == last["expected_winner"] == "model_c"
    assert last["win_probability"] >= 0.95
    snaps = [e for e in lines if e["event"] == "live_snapshot" and e.get("p_feasible")]
    assert snaps and set(snaps[-1]["p_feasible"]) == {f"model_{c}" for c in "abcd"}
    req = urllib.request.Request(
        f"{server.base_url}/api/v1/experiments/{last['experiment_id']}/results", headers=ADMIN)
    with urllib.request.urlopen(req) as r:
        snap = json.loads(r.read())
    band = snap["bandit"]
    assert band["converged"] is True and band["converged_variant"] == "model_c"
    assert band["p_feasible"]["model_d"]["cost_usd"] < 0.05
    assert band["p_feasible"]["model_d"]["latency_ms"] < 0.05
    assert band["p_feasible"]["model_c"] == {"cost_usd": pytest.approx(1.0, abs=0.05),
                                             "latency_ms": pytest.approx(1.0, abs=0.05)}
    assert band["p_best"]["model_d"] < 0.01
    assert proc.stderr == ""
