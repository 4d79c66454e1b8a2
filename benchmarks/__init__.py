"""Stageline's benchmark: engine overhead, throughput and dashboard timings, as one table.

Run it with ``manage.py bench`` (``--quick`` for the small version CI runs). It works on the
database and broker the environment names (SQLite + the embedded broker by default,
PostgreSQL + Redis with ``DATABASE_URL`` / ``CELERY_BROKER_URL``), but never touches the data
there: it creates and migrates a database of its own beside it (``<name>_bench`` on
PostgreSQL, ``$STAGELINE_VAR_DIR/bench.sqlite3`` on SQLite), starts its own
``celery worker`` processes against it and stops them at the end.

Every figure is read from the database records the engine writes (``StepRun.queued_at`` /
``started_at`` / ``finished_at``, ``StageRun`` times, ``Event`` rows), never from timers
inside the engine. It prints figures and whether each target is met; it asserts nothing.

- ``benchmarks.engine``: transition overhead of a 50-stage serial pipeline and a 10×8
  parallel one, against a bare Celery chain on the same broker and workers;
- ``benchmarks.throughput``: many executions at once on two workers;
- ``benchmarks.dataset`` + ``benchmarks.dashboard``: a million executions written with bulk
  inserts (COPY on PostgreSQL), then page timings and query counts through the test client;
- ``benchmarks.report``: percentiles and the table.
"""
