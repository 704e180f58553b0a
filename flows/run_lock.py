"""One run at a time per warehouse (SPEC §8): the run lock beside the warehouse file.

Every process that writes a warehouse's results — ``margin run`` / ``backfill`` /
``demo`` (one lock per date's run, held from the load to the publish) and ``margin
publish`` — holds ``<db>.run.lock`` while it works.  A second run of any date waits
for it, at most the lock timeout, then refuses with a one-line message naming the
holder.  So a date's published rows, its ``runs`` record and its input checksums all
come from the one run that held the lock while it saved and published them.

The lock is an exclusive ``flock`` on the file, which the kernel releases when its
holder dies however it dies (kill -9 included): a killed run never leaves a lock that
blocks the next.  The file also says who holds it (PID, run id, host, start), for the
refusal message and so that the next holder can say it took over from a run that
ended without releasing it (its PID no longer running).  The holder's file descriptor
is not inherited by the processes it starts (``O_CLOEXEC``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.progress import say
from flows.settings import run_lock_for

#: Lock files this process holds, with how many nested holds (a ``margin publish``
#: inside a run of the same process must not wait for itself).
_HELD: dict[Path, int] = {}


class RunLockBusy(RuntimeError):
    """Another run of the warehouse held the run lock past the lock timeout."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running: it exists (perhaps another user's) and is not a
    zombie (exited, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    except OSError:
        return True


def this_process() -> dict:
    """``{pid, host}`` of this process (in run records: a ``running`` record whose process
    is still alive is a run in progress, not an interrupted one)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_alive(process: dict | None) -> bool | None:
    """Whether the process a record or lock file names is still running: None when it
    cannot be told (no process recorded, or another host)."""
    if not isinstance(process, dict) or not isinstance(process.get("pid"), int):
        return None
    if process.get("host") != socket.gethostname():
        return None
    return pid_alive(process["pid"])


def _read_holder(fd: int) -> dict:
    """Who the lock file says holds it ({} when empty or unreadable)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        holder = json.loads(text) if text else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    """``run R (PID n on host, since T)`` from a lock file's content."""
    if not holder:
        return "another process"
    who = f"run {holder.get('run_id')}" if holder.get("run_id") else "a process"
    where = f"PID {holder.get('pid')}" + (f" on {holder['host']}" if holder.get("host") else "")
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"{who} ({where}{since})"


def is_stale(holder: dict) -> bool:
    """The lock file names a process of this host that is no longer running."""
    return process_alive(holder) is False


def _lock_path(db_path: Path) -> Path:
    """The lock file of the warehouse ``db_path`` points to (a symlinked warehouse shares its target's)."""
    return run_lock_for(Path(db_path).resolve())


@contextmanager
def hold_run_lock(db_path: Path, *, timeout: float, run_id: str | None = None) -> Iterator[None]:
    """Hold the warehouse's run lock for the block; wait at most ``timeout`` seconds for it,
    then raise ``RunLockBusy`` with a one-line reason naming the holder."""
    path = _lock_path(db_path)
    timeout = timeout if timeout >= 0 else 0.0  # NaN or negative: do not wait (NaN would wait forever)
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay, announced = 0.1, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if time.monotonic() >= deadline:
                    hint = (" (that PID is no longer running: a process it started still holds the lock)"
                            if is_stale(holder) else "")
                    raise RunLockBusy(
                        f"warehouse {db_path} is in use by {describe(holder)}{hint}; waited {timeout:g}s "
                        f"for it (--lock-timeout); nothing was computed or published by this run"
                    ) from None
                if not announced:
                    say(f"[yellow]waiting[/yellow] for {describe(holder)} to finish with {db_path} "
                        f"(at most {timeout:g}s)")
                    announced = True
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)
        previous = _read_holder(fd)
        if previous and is_stale(previous):
            say(f"[yellow]run lock taken over[/yellow] from {describe(previous)}, which ended without releasing it")
        mine = {**this_process(), "run_id": run_id,
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode("utf-8"), 0)
        _HELD[path] = 1
        try:
            yield
        finally:
            _HELD.pop(path, None)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
