"""Whether a command runs as a Prefect flow run, and the persistent local Prefect server.

Light on purpose: nothing here imports Prefect, Polars or DuckDB, so the ``margin``
command can decide (and say) how it will run in milliseconds.

``--orchestration`` (SPEC §9): ``auto`` (default) runs Prefect flow runs when a Prefect
API is configured — ``PREFECT_API_URL`` in the environment, or in the active profile of
the data folder's Prefect settings (``$PREFECT_HOME/profiles.toml``, where ``margin
server start`` records its URL) — and otherwise the same flow code directly; ``prefect``
always uses Prefect (a temporary in-process server when none is configured); ``none``
never does.  Nothing probes ports: a server counts when its URL is configured.

``margin server start|stop|status`` manage one ``prefect server start`` on loopback in
the background, with its state, log and pid file in ``PREFECT_HOME``
(``data/.prefect`` by default).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flows import settings
from flows.run_lock import pid_alive

MODES = ("auto", "prefect", "none")
SERVER_PROFILE = "margin-server"
DEFAULT_PORT = 4200
STARTUP_SECONDS = 180.0


class OrchestrationError(RuntimeError):
    """A one-line problem with the orchestration choice or the local server."""


def prefect_home() -> Path:
    return settings.prefect_home()


def profiles_path() -> Path:
    return settings.prefect_profiles_path()


def pid_file() -> Path:
    return prefect_home() / "server.json"


def log_file() -> Path:
    return prefect_home() / "server.log"


def _read_profiles() -> dict:
    try:
        return tomllib.loads(profiles_path().read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def configured_prefect_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment or the active Prefect profile, read
    without importing Prefect."""
    if settings.prefect_api_url_setting():
        return settings.prefect_api_url_setting()
    profiles = _read_profiles()
    active = settings.prefect_profile_setting() or profiles.get("active")
    return (profiles.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL") or None


@dataclass(frozen=True)
class Orchestration:
    """How a command runs: ``prefect`` (a flow run) or not, the API URL, and the one line
    to print about it (None when there is nothing to say)."""

    use_prefect: bool
    api_url: str | None
    note: str | None


def resolve(mode: str | None = None) -> Orchestration:
    """Resolve ``--orchestration`` (default ``$MARGIN_ORCHESTRATION`` or ``auto``) once, at the entry point."""
    mode = (mode or settings.default_orchestration()).strip().lower()
    if mode not in MODES:
        raise OrchestrationError(f"--orchestration {mode!r}: use auto, prefect or none")
    url = configured_prefect_api_url()
    if mode == "none":
        return Orchestration(False, None, None)
    if mode == "prefect":
        if url:
            return Orchestration(True, url, f"Prefect flow run on {url}")
        return Orchestration(True, None, "Prefect flow run on a temporary server (20-40 s of start-up; "
                                         "`margin server start` keeps one running)")
    if not url:
        return Orchestration(False, None, "running without Prefect (no Prefect API configured); "
                                          "`margin server start` makes runs Prefect flow runs with a UI")
    state = server_state()
    if state and state.url == url and not state.alive:
        return Orchestration(False, None, f"running without Prefect: the server recorded by `margin server start` "
                                          f"(pid {state.pid}) is not running; `margin server start` restarts it")
    return Orchestration(True, url, f"Prefect flow run on {url}")


# --- the local server -------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    pid: int
    url: str
    started_at: str
    previous_profile: str | None

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def server_state() -> ServerState | None:
    """The server recorded by ``margin server start`` (None when there is none)."""
    try:
        record = json.loads(pid_file().read_text())
        return ServerState(int(record["pid"]), str(record["url"]), str(record.get("started_at", "")),
                           record.get("previous_profile"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def healthy(url: str, timeout: float = 2.0) -> bool:
    """The server at the recorded ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _write_profiles(profiles: dict) -> None:
    lines = []
    if profiles.get("active"):
        lines.append(f"active = {_toml_value(profiles['active'])}")
    for name, settings in (profiles.get("profiles") or {}).items():
        lines += ["", f"[profiles.{json.dumps(name)}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in (settings or {}).items()]
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text("\n".join(lines) + "\n")
    os.replace(temporary, path)


def _record_url(url: str) -> str | None:
    """Make the server's URL the active profile's API URL; returns the profile that was active."""
    profiles = _read_profiles()
    previous = profiles.get("active")
    profiles.setdefault("profiles", {})[SERVER_PROFILE] = {"PREFECT_API_URL": url}
    profiles["active"] = SERVER_PROFILE
    _write_profiles(profiles)
    return previous if previous != SERVER_PROFILE else None


def _forget_url(previous: str | None) -> None:
    profiles = _read_profiles()
    if not profiles:
        return
    profiles.get("profiles", {}).pop(SERVER_PROFILE, None)
    if profiles.get("active") == SERVER_PROFILE:
        if previous and previous in profiles.get("profiles", {}):
            profiles["active"] = previous
        else:
            profiles.pop("active", None)
    _write_profiles(profiles)


def start_server(port: int = DEFAULT_PORT, say=print, wait_seconds: float = STARTUP_SECONDS) -> ServerState:
    """Start ``prefect server start`` on 127.0.0.1:``port`` in the background (its own
    session, so it outlives this command), wait for its health check, record its URL.

    Returns the running server's state; an already running one is returned as is."""
    state = server_state()
    if state and state.alive:
        if healthy(state.url):
            say(f"Prefect server already running at {state.url} (pid {state.pid})")
            return state
        raise OrchestrationError(
            f"a server started earlier (pid {state.pid}, {state.url}) is running but not healthy; "
            f"see {log_file()} or `margin server stop`")
    if state:  # recorded, but no longer running: forget it before starting again
        stop_server()
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/api"
    env = settings.server_environment(home)
    with open(log_file(), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    state = ServerState(process.pid, url, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), None)
    _write_pid_file(state)  # at once, so that `margin server stop` finds a server still starting
    say(f"starting a Prefect server at {url} (pid {process.pid}, log {log_file()}); "
        "the first start takes about 20 s …")
    deadline = time.monotonic() + wait_seconds
    next_note = time.monotonic() + 5
    while not healthy(url, timeout=1.0):
        if process.poll() is not None:
            pid_file().unlink(missing_ok=True)
            raise OrchestrationError(
                f"the Prefect server exited with code {process.returncode} (port {port} in use? "
                f"try `margin server start --port N`); see {log_file()}")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            pid_file().unlink(missing_ok=True)
            raise OrchestrationError(f"the Prefect server was not healthy after {wait_seconds:.0f} s; see {log_file()}")
        if time.monotonic() > next_note:
            say(f"  … waiting for {url}/health")
            next_note = time.monotonic() + 5
        time.sleep(0.3)
    previous = _record_url(url)
    state = ServerState(process.pid, url, state.started_at, previous)
    _write_pid_file(state)
    return state


def _write_pid_file(state: ServerState) -> None:
    pid_file().write_text(json.dumps({"pid": state.pid, "url": state.url, "started_at": state.started_at,
                                      "previous_profile": state.previous_profile, "log": str(log_file())}) + "\n")


def _terminate(pid: int, grace_seconds: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        try:  # reap it when it is our child (start_server's own timeout)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_server() -> ServerState | None:
    """Stop the recorded server and forget its URL; None when none was recorded."""
    state = server_state()
    if state is None:
        return None
    if state.alive:
        _terminate(state.pid)
    _forget_url(state.previous_profile)
    pid_file().unlink(missing_ok=True)
    return state
