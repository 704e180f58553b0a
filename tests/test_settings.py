"""Environment settings (flows.settings)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT_ROOT


def test_prefect_home_is_created_when_the_data_dir_does_not_exist_yet(tmp_path):
    """A fresh MARGIN_DATA_DIR must not make Prefect's temporary server time out (minutes)."""
    data_dir = tmp_path / "not" / "there" / "yet"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"} | {"MARGIN_DATA_DIR": str(data_dir)}
    code = "from flows.settings import configure_prefect; configure_prefect(); import os; print(os.environ['PREFECT_HOME'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(data_dir / ".prefect")
    assert (data_dir / ".prefect").is_dir()


def test_only_settings_reads_the_environment():
    """Issue 11: partitions, the Dask address, the lock timeout and the orchestration mode
    travel as parameters; ``os.environ`` / ``os.getenv`` appear in flows/settings.py only."""
    import re

    readers = []
    for folder in ("flows", "transforms", "market", "outputs"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if path.relative_to(PROJECT_ROOT).as_posix() == "flows/settings.py":
                continue
            code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
            if re.search(r"\bos\.(environ|getenv|putenv)\b|\bfrom os import .*\b(environ|getenv)\b", code):
                readers.append(path.relative_to(PROJECT_ROOT).as_posix())
    assert readers == []


def _allocator_options(extra_env: dict[str, str]) -> str:
    """jemalloc's own report of its decay options in a fresh process that imports the
    ``flows`` package, then Polars (what ``margin`` does)."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | extra_env
    code = ("import os, flows; os.environ['_RJEM_MALLOC_CONF'] += ',stats_print:true'\n"
            "import polars as pl; pl.DataFrame({'a': [1]}).sum()")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          check=True)
    return "\n".join(line.strip() for line in done.stderr.splitlines() if "decay_ms:" in line and "opt." in line)


def test_a_run_keeps_freed_memory_for_reuse_ten_seconds():
    from flows.settings import ALLOCATOR_CONF

    assert ALLOCATOR_CONF == "dirty_decay_ms:10000,muzzy_decay_ms:10000"
    options = _allocator_options({})
    assert "opt.dirty_decay_ms: 10000" in options
    assert "opt.muzzy_decay_ms: 10000" in options


def test_an_operator_allocator_setting_wins():
    options = _allocator_options({"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"})
    assert "opt.dirty_decay_ms: 0" in options
    assert "opt.muzzy_decay_ms: 0" in options
