"""Secret runtime inputs are encrypted in the database (issue 15, finding 1: read with psql)."""

from __future__ import annotations

import importlib
import io
import json
import stat

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from executions.models import Execution
from executions.services import run_pipeline
from pipelines.secrets import pipeline_secret_values, set_secret
from stageline import crypto
from tests.helpers import factories

PIPELINE = factories.serial_pipeline(
    "deploy",
    [factories.shell_stage("build", 'echo "token is <+pipeline.variables.token>"')],
    variables="""
    - {name: token, type: Secret, value: <+input>, required: true}
    - {name: version, type: String, value: <+input>, default: "1.0"}
    """,
)
SECRET = "hunter2-very-secret-value"

pytestmark = pytest.mark.database  # the integration suite runs these on PostgreSQL too

KEY_1, KEY_2, KEY_3 = (Fernet.generate_key().decode() for _ in range(3))


def stored_secret_inputs(execution: Execution) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT secret_inputs FROM {Execution._meta.db_table} WHERE id = %s", [execution.pk]
        )
        return str(cursor.fetchone()[0])


def start(personas) -> Execution:
    pipeline = factories.make_pipeline(personas.project, PIPELINE, personas.admin)
    return run_pipeline(pipeline=pipeline, user=personas.admin, inputs={"token": SECRET})


def test_a_secret_input_is_stored_encrypted_and_read_back_in_clear(personas, settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1]
    execution = start(personas)
    raw = stored_secret_inputs(execution)
    assert SECRET not in raw
    assert "token" in raw  # the name is not secret: forms say "set"
    stored = Execution.objects.get(pk=execution.pk)
    assert stored.secret_inputs["token"] == SECRET
    assert stored.inputs == {"version": "1.0"}


def test_rotation_old_key_still_decrypts_and_reencrypt_moves_to_the_new_key(personas, settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1]
    execution = start(personas)
    before = stored_secret_inputs(execution)

    settings.STAGELINE_SECRET_KEYS = [KEY_2, KEY_1]  # a new key first, the old one kept
    assert Execution.objects.get(pk=execution.pk).secret_inputs["token"] == SECRET
    out = _run_reencrypt()
    assert "1 re-encrypted" in out
    after = stored_secret_inputs(execution)
    assert after != before and SECRET not in after
    assert "0 re-encrypted, 1 already under the newest key" in _run_reencrypt()  # idempotent

    settings.STAGELINE_SECRET_KEYS = [KEY_2]  # the old key dropped
    assert Execution.objects.get(pk=execution.pk).secret_inputs["token"] == SECRET


def test_rotation_reencrypts_the_project_secret_store_too(personas, settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1]
    set_secret(project=personas.project, name="deploy_key", value=SECRET, user=None)
    settings.STAGELINE_SECRET_KEYS = [KEY_2, KEY_1]
    out = _run_reencrypt()
    assert "project secrets: 1 re-encrypted" in out
    settings.STAGELINE_SECRET_KEYS = [KEY_2]
    pipeline = factories.make_pipeline(personas.project, PIPELINE, personas.admin)
    assert pipeline_secret_values(pipeline.pk, ["deploy_key"]) == {"deploy_key": SECRET}


def test_a_value_no_key_opens_gives_a_clear_error(personas, settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1]
    execution = start(personas)
    settings.STAGELINE_SECRET_KEYS = [KEY_3]
    stored = Execution.objects.get(pk=execution.pk)
    assert "token" in stored.secret_inputs  # names need no key
    with pytest.raises(crypto.SecretKeyError, match="cannot be decrypted with any key"):
        stored.secret_inputs["token"]
    with pytest.raises(CommandError, match="cannot be decrypted with any key") as refused:
        _run_reencrypt()
    assert refused.value.returncode == 2
    assert KEY_1 not in str(refused.value) and KEY_3 not in str(refused.value)


def test_a_malformed_key_is_refused_with_the_variable_name(settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1, "not-a-key"]
    with pytest.raises(crypto.SecretKeyError, match="key 2 of STAGELINE_SECRET_KEYS"):
        crypto.encrypt("x")


def test_without_keys_a_key_file_is_created_with_mode_0600(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.STAGELINE_SECRET_KEYS = []
    token = crypto.encrypt("value")
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    crypto.forget_keys()  # another process: reads the same file
    assert crypto.decrypt(token) == "value"
    key_file.write_text(Fernet.generate_key().decode())  # the file replaced: a clear error
    crypto.forget_keys()
    with pytest.raises(crypto.SecretKeyError):
        crypto.decrypt(token)


def test_the_data_migration_encrypts_plaintext_rows(personas, settings):
    settings.STAGELINE_SECRET_KEYS = [KEY_1]
    execution = start(personas)
    with connection.cursor() as cursor:  # a row as stored before encryption at rest
        cursor.execute(
            f"UPDATE {Execution._meta.db_table} SET secret_inputs = %s WHERE id = %s",
            [json.dumps({"token": SECRET}), execution.pk],
        )
    migration = _migration_module()
    apps = MigrationExecutor(connection).loader.project_state(("executions", "0002_initial")).apps
    migration.encrypt_plaintext(apps, None)
    assert SECRET not in stored_secret_inputs(execution)
    assert Execution.objects.get(pk=execution.pk).secret_inputs["token"] == SECRET
    migration.encrypt_plaintext(apps, None)  # a second pass leaves tokens alone
    assert Execution.objects.get(pk=execution.pk).secret_inputs["token"] == SECRET


def _migration_module():
    return importlib.import_module("executions.migrations.0003_encrypt_secret_inputs")


def _run_reencrypt() -> str:
    out = io.StringIO()
    call_command("reencrypt_secrets", stdout=out)
    return out.getvalue()
