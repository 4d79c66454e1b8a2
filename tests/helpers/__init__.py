"""What tests stand on, one module per kind (docs/testing.md, "Layout"):

- ``factories``: organizations, projects, users, roles, pipelines from YAML (``serial_pipeline``,
  ``shell_stage``);
- ``personas``: the fixed users of the ``personas`` fixture (admin, executor, viewer, approver,
  stranger);
- ``runs``: running and watching executions (``drive`` here, ``wait_for*`` for a worker,
  ``log_of``, ``step_of``, ``worker_pid``);
- ``pages``: the pipelines and page accessors of the execution-page tests;
- ``workers``: real Celery workers, a thread or processes (``stageline.workers``).
"""
