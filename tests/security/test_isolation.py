"""A step is untrusted code (docs/security.md, "Step isolation"): it cannot read the worker's
secrets, the database file, var/ or another step's files, and leaves no process behind.

The probes run on the suite's worker: a worker thread in the fast suite (where each mode this
machine offers is tried in turn), worker processes on PostgreSQL + Redis in the integration
suite (the mode the worker chose at start). In CI (CI=true) the sandbox must be available.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from executions import launcher
from executions.models import Execution, LogChunk, StepRun
from executions.services import run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for, wait_for_status
from tests.helpers.workers import PROCESS_MODE

SECRET_NAMES = ("DATABASE_URL", "SECRET_KEY", "CELERY_BROKER_URL", "STAGELINE_VAR_DIR")


def log_of(execution: Execution) -> str:
    return "".join(
        LogChunk.objects.filter(step_run__execution=execution)
        .order_by("step_run_id", "seq")
        .values_list("text", flat=True)
    )


def processes_running(needle: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def other_step_secret() -> tuple[Path, str]:
    """Another step's working directory (made the way the runner makes it) holding a secret."""
    # A working directory as a new sandbox per step, or another worker, has it (a long-lived
    # sandbox of this thread would hand out its own /step).
    workdir = dataclasses.replace(launcher.current(), reuse=False).make_workdir("other-step-")
    secret = f"other-step-secret-{secrets.token_hex(8)}"
    path = workdir / "secret.txt"
    path.write_text(secret)
    owner = launcher.current().user
    if owner:
        os.chown(path, owner.uid, owner.gid)
    path.chmod(0o600)
    return workdir, secret


def probe_script(sleeper: str, other_workdir: Path) -> str:
    """Each probe prints ``LEAK:<what>`` when it got what it must not get."""
    var = Path(settings.VAR_DIR).resolve()
    db = connection.settings_dict["NAME"]
    names = "|".join(SECRET_NAMES)
    lines = [
        "set +e",
        f"grep -qaE '{names}' /proc/$PPID/environ 2>/dev/null && echo LEAK:parent-environ",
        f"grep -qaE '{names}' /proc/1/environ 2>/dev/null && echo LEAK:init-environ",
        f"env | grep -qE '^({names})=' && echo LEAK:step-environment",
        # Every process the step can see, with its environment where readable.
        "for p in /proc/[0-9]*; do"
        "  tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -qE 'celery|pytest|gunicorn' && echo LEAK:worker-process-visible;"
        f"  grep -qaE '{names}' $p/environ 2>/dev/null && echo LEAK:environ-of-$(basename $p);"
        "done",
        f"ls '{var}' 2>/dev/null | grep -qv '^work$' && echo LEAK:var-listing",
        f"cat '{other_workdir}/secret.txt' 2>/dev/null && echo LEAK:other-step-workdir",
        "echo x > /usr/stageline-probe 2>/dev/null && echo LEAK:system-writable",
        f"setsid sleep {sleeper} > /dev/null 2>&1 < /dev/null &",
        f"( ( sleep {sleeper} > /dev/null 2>&1 < /dev/null & ) & ) ",
        "echo probes-done",
    ]
    if isinstance(db, (str, Path)) and Path(db).is_file():
        lines.insert(-1, f"head -c 16 '{db}' >/dev/null 2>&1 && echo LEAK:database-file")
    broker = var / "broker"
    if broker.exists():
        lines.insert(-1, f"ls '{broker}' >/dev/null 2>&1 && echo LEAK:broker-directory")
    return "\n".join(lines)


def run_probe(personas) -> tuple[str, str]:
    """Run the probes in a step; the step's log, and the unique sleep its daemons ran."""
    sleeper = f"{600 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    other_workdir, secret = other_step_secret()
    try:
        pipeline = make_pipeline(
            personas.project,
            serial_pipeline("probe", [shell_stage("probe", probe_script(sleeper, other_workdir))]),
        )
        execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
        execution = wait_for_status(execution, {Status.SUCCESS, Status.FAILED})
        log = log_of(execution)
        assert execution.status == Status.SUCCESS, log
        assert "probes-done" in log, log
        return log, sleeper
    finally:
        shutil.rmtree(other_workdir, ignore_errors=True)


def assert_nothing_survives(sleeper: str) -> None:
    """The step's detached daemons (``setsid``, a double fork) are gone once the step ended."""
    try:
        wait_for(lambda: not processes_running(f"sleep {sleeper}"), timeout=5, message="nothing")
    except AssertionError:
        raise AssertionError(
            f"processes of the step survived it: {processes_running(f'sleep {sleeper}')}"
        ) from None


def modes_here() -> list[str]:
    """The isolation modes this machine can offer (the thread worker tries each)."""
    if PROCESS_MODE:
        return ["as-configured"]
    found = []
    for mode in launcher.Isolation:
        try:
            launcher.choose(mode, settings.STAGELINE_STEP_USER)
        except ImproperlyConfigured:
            continue
        found.append(str(mode))
    return found


@pytest.fixture(params=modes_here())
def mode(request, monkeypatch) -> launcher.Launcher:
    """The launcher steps run with: each mode in turn on the worker thread; on worker processes,
    the one they chose at start (from the same settings)."""
    if request.param == "as-configured":
        return launcher.choose(settings.STAGELINE_STEP_ISOLATION, settings.STAGELINE_STEP_USER)
    chosen = launcher.choose(request.param, settings.STAGELINE_STEP_USER)
    monkeypatch.setattr(launcher, "_current", chosen)
    return chosen


@pytest.mark.engine
def test_a_step_cannot_read_the_workers_secrets_files_or_processes(worker, personas, mode):
    log, sleeper = run_probe(personas)
    leaks = sorted({line for line in log.splitlines() if line.startswith("LEAK:")})
    if mode.mode == launcher.Isolation.SAME_USER:
        # Documented limit: the step is the worker's user and reads what that user reads. Only
        # the worker's own environment is closed (the worker is non-dumpable) unless it is root.
        allowed = {"LEAK:var-listing", "LEAK:database-file", "LEAK:broker-directory"}
        allowed |= {"LEAK:other-step-workdir", "LEAK:worker-process-visible"}
        if os.geteuid() == 0:  # steps run as root: nothing is closed to them
            allowed = set(leaks)
        assert "LEAK:step-environment" not in leaks
        assert set(leaks) <= allowed, leaks
    elif mode.mode == launcher.Isolation.OTHER_USER:
        # Documented limit: no PID namespace, and steps running at the same moment share the
        # step user (the other step's folder has an unguessable name, which this probe knows).
        assert set(leaks) <= {"LEAK:worker-process-visible", "LEAK:other-step-workdir"}, leaks
    else:
        assert leaks == [], f"in {mode.mode} mode the step got: {leaks}\n{log}"
    assert_nothing_survives(sleeper)


@pytest.mark.engine
def test_a_timed_out_step_leaves_no_process_behind(worker, personas, mode):
    sleeper = f"{600 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    script = f"setsid sleep {sleeper} > /dev/null 2>&1 < /dev/null &\nsleep {sleeper}"
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline("hang", [shell_stage("hang", script, timeout="2s")]),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, {Status.EXPIRED, Status.FAILED}, timeout=60)
    assert execution.status == Status.EXPIRED
    assert_nothing_survives(sleeper)


def skip_outside_ci(message: str) -> None:
    """Skip where this machine cannot run the test (a laptop without bubblewrap, a non-root
    worker); in CI (CI=true: root, bubblewrap installed by .ci/run) the same reason fails."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def test_the_sandbox_is_available_in_ci():
    """CI installs bubblewrap (.ci/run): there, a missing sandbox fails instead of skipping."""
    chosen = launcher.choose("auto", settings.STAGELINE_STEP_USER)
    if chosen.mode != launcher.Isolation.SANDBOX:
        skip_outside_ci(f"no sandbox for steps here: the worker would use {chosen.describe()}")


def test_an_explicit_mode_that_cannot_be_honoured_stops_start_up(settings, monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="must be one of auto, sandbox"):
        launcher.choose("chroot", "stageline-step")
    which = launcher.shutil.which
    monkeypatch.setattr(
        launcher.shutil, "which", lambda name: None if name == "bwrap" else which(name)
    )
    with pytest.raises(ImproperlyConfigured, match="sandbox, but bubblewrap"):
        launcher.choose("sandbox", settings.STAGELINE_STEP_USER)


@pytest.mark.integration
def test_a_killed_worker_takes_its_steps_detached_processes_with_it(worker, personas):
    """SIGKILL the whole worker while its step runs a ``setsid`` daemon: the step's processes
    die with it (the sandbox's namespace, or the group leader's death signal)."""
    worker.start("isolation", "isolation", concurrency=1)
    log = worker.logs["isolation"].read_text()
    assert "step isolation = " in log, log[-2000:]
    sleeper = f"{600 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    script = (
        f"setsid sleep {sleeper} > /dev/null 2>&1 < /dev/null &\necho daemon-started\nsleep 600"
    )
    pipeline = make_pipeline(
        personas.project,
        serial_pipeline(
            "killed",
            [shell_stage("hold", script, extra="\n        runs_on: isolation")],
        ),
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    wait_for(lambda: "daemon-started" in log_of(execution), timeout=30, message="the daemon")
    assert processes_running(f"sleep {sleeper}"), "the daemon did not start: nothing was tested"
    assert StepRun.objects.get(execution=execution).status == Status.RUNNING
    worker.kill("isolation")
    time.sleep(0.5)
    assert_nothing_survives(sleeper)


def run_in(chosen: launcher.Launcher, script: str) -> tuple[int, str]:
    """Run ``script`` the way the shell runner does, in this thread; its exit code and output."""
    workdir = chosen.make_workdir("direct-")
    try:
        path = workdir / ".stageline-script.sh"
        path.write_text(script)
        step = chosen.start(path, workdir, chosen.environment(workdir))
        output = step.stdout.read().decode()
        code = step.wait(30)
        step.end()
        step.stdout.close()
        return code, output
    finally:
        chosen.remove_workdir(workdir)


def test_a_long_lived_sandbox_carries_nothing_from_one_step_to_the_next():
    """Steps of one worker share its long-lived sandbox one after the other: the next one finds
    no file and no process of the one before."""
    chosen = launcher.choose("auto", settings.STAGELINE_STEP_USER)
    if not chosen.reuse:
        skip_outside_ci(f"no long-lived sandbox here: {chosen.describe()}")
    sleeper = f"{600 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    code, output = run_in(
        chosen,
        f"echo left > /tmp/left; echo left > /var/tmp/left; echo left > /step/left\n"
        f"mkdir -p /tmp/locked/in && touch /tmp/locked/in/f && chmod 0 /tmp/locked/in /tmp/locked\n"
        f"setsid sleep {sleeper} > /dev/null 2>&1 < /dev/null &\n"
        f"( ( sleep {sleeper} > /dev/null 2>&1 < /dev/null & ) & )\necho first-done",
    )
    assert (code, output.strip()) == (0, "first-done")
    assert_nothing_survives(sleeper)
    code, output = run_in(
        chosen,
        "ls -A /tmp /var/tmp /step | grep -v -e '^/' -e '^tmp$' -e '^.stageline-script.sh$' "
        "-e '^$' -e '^stageline-test-shared-' || true\nps -e -o comm= | grep -c sleep || true",
    )
    assert (code, output.split()) == (0, ["0"]), output


def test_other_user_mode_refuses_a_working_directory_the_step_user_cannot_reach(settings, tmp_path):
    if os.geteuid() != 0:
        skip_outside_ci("only a root worker switches to the step user")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    settings.STAGELINE_WORK_DIR = closed / "work"
    with pytest.raises(ImproperlyConfigured, match="cannot reach STAGELINE_WORK_DIR"):
        launcher.choose("other-user", settings.STAGELINE_STEP_USER)


def test_a_step_without_network_cannot_reach_the_database_port(settings):
    """The network is shared unless STAGELINE_STEP_NETWORK=none: then the sandbox has only its
    own loopback, and a database that trusts local connections is out of a step's reach."""
    db_port = int(connection.settings_dict.get("PORT") or 5432)
    probe = (
        f"timeout 2 bash -c '</dev/tcp/127.0.0.1/{db_port}' 2>/dev/null && echo reached "
        "|| echo unreachable"
    )
    settings.STAGELINE_STEP_NETWORK = "none"
    try:
        closed = launcher.choose("sandbox", settings.STAGELINE_STEP_USER)
    except ImproperlyConfigured as exc:
        skip_outside_ci(f"no sandbox here: {exc}")
        raise
    assert run_in(closed, probe) == (0, "unreachable\n")
    with pytest.raises(ImproperlyConfigured, match="STAGELINE_STEP_NETWORK=none needs the sandbox"):
        launcher.choose("same-user", settings.STAGELINE_STEP_USER)
    settings.STAGELINE_STEP_NETWORK = "nowhere"
    with pytest.raises(ImproperlyConfigured, match="must be host or none, not 'nowhere'"):
        launcher.choose("auto", settings.STAGELINE_STEP_USER)
