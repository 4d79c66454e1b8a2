"""Plain-Python helpers shared by the apps; this package imports neither ``pipelines`` nor
``executions`` (tests/test_layering.py checks it)."""
