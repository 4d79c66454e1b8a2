"""Encrypt the secret runtime inputs stored in plain text before secrets were encrypted at rest."""

from django.db import migrations

import executions.models
from stageline import crypto


def encrypt_plaintext(apps, schema_editor):
    Execution = apps.get_model("executions", "Execution")
    rows = Execution.objects.exclude(secret_inputs={}).only("id", "secret_inputs")
    for execution in rows.iterator(chunk_size=500):
        values = execution.secret_inputs or {}
        tokens = {}
        for name, value in values.items():
            try:
                crypto.decrypt(str(value))  # already a token (a re-run migration)
                tokens[name] = value
            except crypto.SecretKeyError:
                tokens[name] = crypto.encrypt(str(value))
        if tokens != values:
            Execution.objects.filter(pk=execution.pk).update(secret_inputs=tokens)


def decrypt_to_plaintext(apps, schema_editor):
    Execution = apps.get_model("executions", "Execution")
    rows = Execution.objects.exclude(secret_inputs={}).only("id", "secret_inputs")
    for execution in rows.iterator(chunk_size=500):
        plain = {name: crypto.decrypt(token) for name, token in execution.secret_inputs.items()}
        Execution.objects.filter(pk=execution.pk).update(secret_inputs=plain)


class Migration(migrations.Migration):
    dependencies = [("executions", "0002_initial")]

    operations = [
        migrations.RunPython(encrypt_plaintext, decrypt_to_plaintext, elidable=False),
        migrations.AlterField(
            model_name="execution",
            name="secret_inputs",
            field=executions.models.SecretValuesField(
                blank=True,
                default=dict,
                editable=False,
                help_text="Secret runtime inputs, encrypted.",
            ),
        ),
    ]
