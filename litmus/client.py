"""A local-evaluation client for model routers.

It fetches `/api/v1/config`, evaluates assignments in-process with the same `litmus.core`
code as the server (bit-identical answers), follows `/api/v1/config/stream` for new versions
and falls back to polling when the stream is unavailable. `assign()` never touches the network:
it reads the last good config, which is kept when the server cannot be reached.

    client = LitmusClient("http://127.0.0.1:8000", token="...")
    client.start()                      # background thread
    a = client.assign("ranker-v2", "user-42", {"country": "DE"})
    a.variant, a.config, a.reason

`AsyncLitmusClient` offers the same for asyncio code (`await client.start()`).

Exposures: `client.log_exposures([exposure_event("ranker-v2", "user-42", a)])` posts them to
`/api/v1/events/exposure` with each answer's own `probability` (the counterfactual estimates
rest on it, README "What if"); optional `covariates` go with them.

With `fast_lane_url` (the server's fast lane, LITMUS_ASSIGN_PORT: by default the main port + 1)
the config is fetched there, off the main listener; the stream stays on `base_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import orjson

from litmus.core.assignment import Assignment, CompiledExperiment, compile_config
from litmus.core.assignment import assign as core_assign

log = logging.getLogger("litmus.client")
UNKNOWN = Assignment(None, None, "unknown", None, 0)  # type: ignore[arg-type]


class ConfigState:
    """The last good config, swapped whole so readers never see half an update."""

    def __init__(self) -> None:
        self.version: str | None = None
        self._by_ref: dict[str, CompiledExperiment] = {}

    def apply(self, body: bytes) -> bool:
        """Install a config body; returns False (keeping the old one) if it is malformed."""
        try:
            doc = orjson.loads(body)
            by_ref: dict[str, CompiledExperiment] = {}
            for d in doc["experiments"]:
                c = compile_config(d)
                by_ref[c.key] = c
                by_ref[c.id] = c
            version = str(doc["version"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed config: %s", exc)
            return False
        self._by_ref, self.version = by_ref, version
        return True

    def assign(self, experiment: str, unit_id: str, attributes: Mapping[str, Any] | None) -> Assignment:
        """Evaluate locally; reason `unknown` when the experiment is not in the config."""
        c = self._by_ref.get(experiment)
        return UNKNOWN if c is None else core_assign(c, unit_id, attributes)

    def keys(self) -> list[str]:
        """Experiment keys in the current config."""
        return sorted({c.key for c in self._by_ref.values()})


def exposure_event(experiment: str, unit_id: str, assignment: Assignment, *,
                   covariates: Mapping[str, float] | None = None,
                   event_id: str | None = None) -> dict[str, Any] | None:
    """The exposure event for a local answer, carrying the answer's probability (a forced
    answer, an override or a winner, carries 1); None when no variant was served."""
    if assignment.variant is None:
        return None
    ev: dict[str, Any] = {"experiment": experiment, "unit_id": unit_id,
                          "variant": assignment.variant}
    if assignment.probability is not None:
        ev["probability"] = assignment.probability
    if covariates:
        ev["covariates"] = dict(covariates)
    if event_id is not None:
        ev["event_id"] = event_id
    return ev


def _events_body(events: list[dict[str, Any] | None]) -> bytes:
    return orjson.dumps({"events": [e for e in events if e is not None]})


def _parse_sse(lines: list[str]) -> bytes | None:
    data = [ln[5:].lstrip() for ln in lines if ln.startswith("data:")]
    return "\n".join(data).encode() if data else None


class _Client:
    """What both clients keep: where to call, the token, how often to refresh, the config."""

    def __init__(self, base_url: str, token: str, *, poll_interval_s: float = 10.0,
                 timeout_s: float = 5.0, stream: bool = True,
                 fast_lane_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.config_url = (fast_lane_url or base_url).rstrip("/") + "/api/v1/config"
        self._headers = {"Authorization": f"Bearer {token}"}
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.stream = stream
        self.state = ConfigState()

    def assign(self, experiment: str, unit_id: str,
               attributes: Mapping[str, Any] | None = None) -> Assignment:
        """The unit's variant, from the in-memory config (no network, no await)."""
        return self.state.assign(experiment, unit_id, attributes)


class LitmusClient(_Client):
    """Thread-safe synchronous client; refreshes in a daemon thread."""

    def __init__(self, base_url: str, token: str, *, poll_interval_s: float = 10.0,
                 timeout_s: float = 5.0, stream: bool = True,
                 fast_lane_url: str | None = None) -> None:
        super().__init__(base_url, token, poll_interval_s=poll_interval_s, timeout_s=timeout_s,
                         stream=stream, fast_lane_url=fast_lane_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None

    def log_exposures(self, events: list[dict[str, Any] | None]) -> dict[str, Any]:
        """POST exposure events (`exposure_event`; None entries are skipped) in one batch;
        returns the 202 answer. A refusal raises urllib.error.HTTPError, whose body names
        each bad event and field; nothing of the batch is stored then."""
        req = urllib.request.Request(
            self.base_url + "/api/v1/events/exposure", data=_events_body(events),
            headers={**self._headers, "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            out: dict[str, Any] = orjson.loads(resp.read())
        return out

    def refresh(self) -> bool:
        """Fetch /config once (If-None-Match); True when a config is installed."""
        headers = dict(self._headers)
        if self.state.version:
            headers["If-None-Match"] = f'"{self.state.version}"'
        req = urllib.request.Request(self.config_url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return self.state.apply(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return True
            log.warning("config fetch failed: HTTP %s", exc.code)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log.warning("config fetch failed: %s; keeping the last good config", exc)
        return False

    def _follow_stream(self) -> None:
        req = urllib.request.Request(self.base_url + "/api/v1/config/stream", headers=self._headers)
        # The server sends a heartbeat every 15 s; a silent minute means a dead connection.
        with urllib.request.urlopen(req, timeout=60) as resp:
            self._response = resp
            lines: list[str] = []
            while not self._stop.is_set():
                raw = resp.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                if line:
                    lines.append(line)
                    continue
                body = _parse_sse(lines)
                lines = []
                if body is not None:
                    self.state.apply(body)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Whatever goes wrong, the refresher keeps going: a dead thread would serve a stale
            # config forever without a word.
            if self.stream:
                try:
                    self._follow_stream()
                except Exception as exc:
                    log.info("config stream unavailable (%s); polling", exc)
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:
                log.exception("config refresh failed")
            self._stop.wait(self.poll_interval_s)

    def start(self, wait_s: float = 5.0) -> bool:
        """Fetch the config once, then keep it fresh in the background; True if fetched."""
        ok = self.refresh()
        self._thread = threading.Thread(target=self._run, name="litmus-client", daemon=True)
        self._thread.start()
        return ok

    def close(self) -> None:
        """Stop refreshing."""
        self._stop.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()


class AsyncLitmusClient(_Client):
    """The same client for asyncio code, refreshing in a task."""

    def __init__(self, base_url: str, token: str, *, poll_interval_s: float = 10.0,
                 timeout_s: float = 5.0, stream: bool = True,
                 fast_lane_url: str | None = None) -> None:
        super().__init__(base_url, token, poll_interval_s=poll_interval_s, timeout_s=timeout_s,
                         stream=stream, fast_lane_url=fast_lane_url)
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None

    async def log_exposures(self, events: list[dict[str, Any] | None]) -> dict[str, Any]:
        """POST exposure events in one batch (as LitmusClient.log_exposures); a refusal raises
        aiohttp.ClientResponseError after reading the body that names each bad field."""
        import aiohttp

        async with self._session.post(
            self.base_url + "/api/v1/events/exposure", data=_events_body(events),
            headers={**self._headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        ) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise aiohttp.ClientResponseError(
                    resp.request_info, resp.history, status=resp.status,
                    message=body.decode(errors="replace"))
            out: dict[str, Any] = orjson.loads(body)
        return out

    async def refresh(self) -> bool:
        """Fetch /config once (If-None-Match); True when a config is installed."""
        import aiohttp

        headers = dict(self._headers)
        if self.state.version:
            headers["If-None-Match"] = f'"{self.state.version}"'
        try:
            async with self._session.get(
                self.config_url, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                if resp.status == 304:
                    return True
                if resp.status != 200:
                    log.warning("config fetch failed: HTTP %s", resp.status)
                    return False
                return self.state.apply(await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("config fetch failed: %s; keeping the last good config", exc)
            return False

    async def _follow_stream(self) -> None:
        import aiohttp

        async with self._session.get(
            self.base_url + "/api/v1/config/stream", headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60),
        ) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            lines: list[str] = []
            pending = b""
            # Chunks, not readline(): a config line may exceed aiohttp's line-length limit.
            async for chunk in resp.content.iter_any():
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self._on_line(raw.decode().rstrip("\r"), lines)

    def _on_line(self, line: str, lines: list[str]) -> None:
        """Collect SSE lines; an empty line ends an event."""
        if line:
            lines.append(line)
            return
        body = _parse_sse(lines)
        lines.clear()
        if body is not None:
            self.state.apply(body)

    async def _run(self) -> None:
        import aiohttp

        while True:
            if self.stream:
                try:
                    await self._follow_stream()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    log.info("config stream unavailable (%s); polling", exc)
                except Exception:
                    # Never let the refresher die: a stale config would be served forever.
                    log.exception("config stream failed; polling")
            try:
                await self.refresh()
            except Exception:
                log.exception("config refresh failed")
            await asyncio.sleep(self.poll_interval_s)

    async def start(self) -> bool:
        """Fetch the config once, then keep it fresh in a background task."""
        import aiohttp

        self._session = aiohttp.ClientSession()
        ok = await self.refresh()
        self._task = asyncio.create_task(self._run(), name="litmus-client")
        return ok

    async def close(self) -> None:
        """Stop refreshing and close the HTTP session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
