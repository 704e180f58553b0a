"""Shared fixtures.

Prefect: one real ``prefect server start`` on loopback per test session (about 20 s),
shared by in-process flow calls and by subprocesses through ``PREFECT_API_URL``;
never one temporary server per flow run.  Use the ``prefect_api`` fixture in any test
that runs a flow (directly or via the ``margin`` command in a subprocess).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"
EXAMPLE_BOOKS = ("book_a_12_accounts", "book_b_40_accounts_custom_grid")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quiet_prefect_env(home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MARGIN_QUIET": "1",
    }


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """URL of a Prefect server running for the whole test session; also exported to
    ``os.environ`` so in-process flows and child processes use it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, **_quiet_prefect_env(home)}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.5)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", *(_quiet_prefect_env(home)))}
    os.environ.update(_quiet_prefect_env(home))
    os.environ["PREFECT_API_URL"] = url
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def margin_cli(*args: str, env: dict | None = None, timeout: float = 300, check: bool = False):
    """Run the real ``margin`` command in a subprocess (inherits PREFECT_API_URL)."""
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"margin {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@pytest.fixture
def example_inputs(tmp_path):
    """Copy a worked example's inputs to a temporary folder: ``example_inputs(book) -> Path``."""

    def copy(book: str) -> Path:
        target = tmp_path / book / "inputs"
        shutil.copytree(EXAMPLES / book / "inputs", target)
        return target

    return copy
