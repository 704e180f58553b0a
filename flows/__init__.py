"""Prefect flows and tasks, all I/O (Parquet in, DuckDB out), and the ``margin`` command line.

Importing the package sets Polars' allocator up for a batch run before Polars itself is
imported (``settings.configure_allocator``).
"""

from flows import settings as _settings

_settings.configure_allocator()
