"""The benchmark's own database, beside the configured one, so its rows never mix with real data.

PostgreSQL: ``<configured name>_bench`` on the same server. SQLite: ``bench.sqlite3`` in
``$STAGELINE_VAR_DIR``. It is created (or kept, so the million generated executions survive
from one run to the next) and migrated with Django's own test-database machinery, and the
default connection is switched to it for the rest of the process.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def default_name() -> str:
    if connection.vendor == "sqlite":
        return str(Path(settings.VAR_DIR) / "bench.sqlite3")
    return f"{connection.settings_dict['NAME']}_bench"


def use_bench_database(name: str | None = None, *, fresh: bool = False) -> str:
    """Create (``fresh``: drop and create) and migrate the bench database, point the default
    connection at it, and return its ``DATABASE_URL`` for worker processes."""
    name = name or default_name()
    connection.close()
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    with contextlib.redirect_stdout(io.StringIO()):  # createcachetable's "already exists"
        connection.creation.create_test_db(
            verbosity=0, autoclobber=True, serialize=False, keepdb=not fresh
        )
    return database_url()


def database_url() -> str:
    """The ``DATABASE_URL`` of the database the default connection uses now."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = db["PORT"] or 5432
    query = "&".join(
        f"{quote(str(k))}={quote(str(v))}" for k, v in (db.get("OPTIONS") or {}).items()
    )
    return f"postgres://{credentials}@{host}:{port}/{quote(db['NAME'], safe='')}" + (
        f"?{query}" if query else ""
    )


def describe() -> str:
    """``PostgreSQL 15.2 (stageline_bench)`` or ``SQLite 3.40 (…/bench.sqlite3)``."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
            cursor.execute("SHOW shared_buffers")
            buffers = cursor.fetchone()[0]
            return f"PostgreSQL {version} ({connection.settings_dict['NAME']}, shared_buffers {buffers})"
        cursor.execute("select sqlite_version()")
        return f"SQLite {cursor.fetchone()[0]} ({connection.settings_dict['NAME']}, WAL)"
