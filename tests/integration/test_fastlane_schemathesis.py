"""Schemathesis against the fast lane: the OpenAPI document cut to the routes it serves, with
the fast lane as its server. No 5xx, every answer conforms to the document, invalid input is
refused, auth is never ignored (as tests/integration/test_schemathesis.py does for the main port)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CLIENT_SECRET
from tests.integration.test_schemathesis import CONFIG, MAX_EXAMPLES, SEED
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.slow

SERVED = ("/api/v1/assign", "/api/v1/assign/batch", "/api/v1/config", "/healthz")


def test_schemathesis_against_the_fast_lane(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(database_url, tmp_path / "srv", env={
        "LITMUS_LOG_LEVEL": "WARNING", "LITMUS_ASSIGN_PORT": str(port)})
    server.start()
    try:
        with urllib.request.urlopen(server.base_url + "/api/v1/openapi.json", timeout=10) as r:
            doc = json.loads(r.read())
        doc["paths"] = {p: v for p, v in doc["paths"].items() if p in SERVED}
        doc["servers"] = [{"url": f"http://127.0.0.1:{port}"}]
        assert {"/api/v1/assign", "/api/v1/assign/batch", "/api/v1/config"} <= set(doc["paths"])
        schema = tmp_path / "fastlane-openapi.json"
        schema.write_text(json.dumps(doc))
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        cmd = [
            sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; "
            "sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
            "--config-file", str(config), "run", str(schema), "--url", f"http://127.0.0.1:{port}",
            "--header", f"Authorization: Bearer {CLIENT_SECRET}",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(MAX_EXAMPLES), "--seed", SEED,
            "--request-timeout", "20", "--no-color",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    finally:
        server.stop()
    out = proc.stdout + proc.stderr
    print(out[-2500:])
    assert proc.returncode == 0, out[-6000:]
    tested = re.search(r"Tested:\s+(\d+)", out)
    assert tested is not None and int(tested.group(1)) >= 3, out[-3000:]
    assert "Traceback" not in server.log(), server.log()[-4000:]
