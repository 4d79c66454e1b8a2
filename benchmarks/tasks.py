"""The baseline: a bare Celery chain whose tasks do the same trivial work as a benchmark step.

Each ``hop`` runs the step's script (``bash --noprofile --norc -e`` on a one-line file, as
the ShellScript runner does) and appends ``index start end`` to a file, so the benchmark
reads the chain's times the way it reads Stageline's from the database. Workers load this
module with ``-I benchmarks.tasks``; the task inherits the app's settings (late ack,
prefetch 1, JSON), so both sides run with the same broker and worker settings.
"""

from __future__ import annotations

import os
import subprocess
import time

from celery import chain, shared_task


@shared_task(name="benchmarks.tasks.hop", ignore_result=True)
def hop(index: int, script: str, ledger: str) -> None:
    started = time.time()
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    finished = time.time()
    fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{index} {started:.6f} {finished:.6f}\n".encode())
    finally:
        os.close(fd)


def send_chain(length: int, script: str, ledger: str, queue: str) -> None:
    """Send a chain of ``length`` hops to ``queue`` (each starts when the one before it succeeded)."""
    hops = [hop.si(index, script, ledger).set(queue=queue) for index in range(length)]
    chain(*hops).apply_async()


def send_chains(count: int, length: int, script: str, ledger: str, queue: str) -> None:
    """Send ``count`` chains of ``length`` hops at once, all appending to one ledger (the
    throughput baseline: a burst of bare chains)."""
    for _ in range(count):
        send_chain(length, script, ledger, queue)
