"""Schemathesis against a real `litmus serve` with an admin token: no 5xx answer, every answer
conforms to /api/v1/openapi.json (status, media type, headers, body), invalid input is refused,
and auth is never ignored. Bounded: a fixed number of examples per operation (about a minute)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_SECRET
from tests.servers import ServerProcess

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("LITMUS_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("LITMUS_FUZZ_SEED", "20261128")
# positive_data_acceptance is off: a schema cannot say "weights sum to 1" or "this experiment
# exists", so schema-valid bodies are often rightly refused with 422/404. Refusals of invalid
# input may be any of the 4xx answers the API documents.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 409, 412, 413, 422]
"""


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, tmp_path / "srv", env={"LITMUS_LOG_LEVEL": "WARNING"})
    server.start()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    try:
        cmd = [
            sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; "
            "sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
            "--config-file", str(config), "run", f"{server.base_url}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {ADMIN_SECRET}",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            # An open server-sent-events stream never ends: nothing to fuzz there.
            "--exclude-path", "/api/v1/config/stream",
            "--max-examples", str(MAX_EXAMPLES), "--seed", SEED,
            "--request-timeout", "20", "--no-color",
            "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    finally:
        server.stop()
    out = proc.stdout + proc.stderr
    # The closing "==== ... in N s ====" line, and the counts above it, for the log of the run.
    lines = out.splitlines()
    closing = [i for i, ln in enumerate(lines) if re.match(r"^=+ .* in [\d.]+s =+$", ln)]
    print("\n".join(lines[closing[-1] - 12 : closing[-1] + 1]) if closing else out[-2000:])
    assert proc.returncode == 0, out[-6000:]
    # The run really tested the API: every operation but the stream was selected and tested.
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested is not None and int(tested.group(1)) >= 25, out[-3000:]
    assert "Traceback" not in server.log(), server.log()[-4000:]
