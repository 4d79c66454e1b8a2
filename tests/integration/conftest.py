"""The integration suite: real ``celery worker`` and ``celery beat`` processes on PostgreSQL and
Redis (or RabbitMQ), through the root conftest's ``workers`` fixture. Every test here is marked
``integration``, so it runs only with ``STAGELINE_TEST_WORKERS=process``; anywhere else it fails
with the reason (the root conftest's ``pytest_runtest_setup``), so a misconfigured run can never
pass by skipping them.
"""
