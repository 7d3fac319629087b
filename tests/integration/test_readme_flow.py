"""The README's curl flow, run as written, twice, against a real server: each run creates its own
experiment and follows the key the server returned (`ranker-v2`, then `ranker-v2-2`), the PATCH
keeps every variant's config, results answer after the wait the flow states, and both runs end
stopped with their winner. The token is given as it stands in `.litmus/admin_token`
(`admin:<secret>`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_SECRET
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_flow() -> str:
    """The first bash block after "The seed's flow with curl"."""
    text = README.read_text()
    start = text.index("The seed's flow with curl")
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block is not None, "the README lost its curl flow"
    return block.group(1)


def get(base: str, path: str) -> Any:
    req = urllib.request.Request(base + path,
                                 headers={"Authorization": f"Bearer admin:{ADMIN_SECRET}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's flow needs curl")
def test_the_readme_curl_flow_runs_twice_as_written(database_url: str, tmp_path: Path) -> None:
    flow = readme_flow()
    assert "http://localhost:8000/api/v1" in flow
    server = ServerProcess(database_url, tmp_path / "srv",
                           env={"LITMUS_RECOMPUTE_INTERVAL_S": "1"}).start()
    try:
        script = "set -euo pipefail\n" + flow.replace("http://localhost:8000", server.base_url)
        outputs = []
        for _ in range(2):
            run = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                 timeout=120,
                                 env={"PATH": "/usr/bin:/bin",
                                      "LITMUS_TOKEN": f"admin:{ADMIN_SECRET}"})
            assert run.returncode == 0, run.stderr
            outputs.append(run.stdout)
        keys = [out.splitlines()[0] for out in outputs]
        assert keys == ["ranker-v2", "ranker-v2-2"]
        for key, out in zip(keys, outputs, strict=True):
            assert '"code":' not in out, out  # no error answer anywhere in the flow
            exp = get(server.base_url, f"/api/v1/experiments/{key}")
            assert exp["status"] == "stopped" and exp["winner"] == "model_b"
            assert {v["key"]: v["config"] for v in exp["variants"]} == {
                "model_a": {"model": "ranker-v1"}, "model_b": {"model": "ranker-v2"},
                "model_c": {"model": "ranker-v3"}}
            # Step 6's results answered (the snapshot, then its CSV header).
            assert f'"experiment_key":"{key}"' in out and "metric,control,treatment" in out
            history = get(server.base_url, f"/api/v1/experiments/{key}/history")
            assert len(history["history"]) >= 6  # create, patch, launch twice, pause, stop
    finally:
        server.stop()
