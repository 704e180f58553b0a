"""Benchmark harness (not part of the test suite): ``uv run python -m benchmarks.run --help``."""
