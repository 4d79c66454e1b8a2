"""Fixed secrets of stored definitions never show, however the YAML spells them (issue 15,
finding 6): escapes, quoted or folded across lines, in ``allowed_values``."""

from __future__ import annotations

import textwrap

import pytest
from django.urls import reverse

from pipelines.models import Pipeline
from pipelines.spec.redact import mask_secrets
from tests.helpers import factories

# Stored before literal secrets were refused at save (versions are immutable: they stay).
OLD_DEFINITION = textwrap.dedent(
    """\
    pipeline:
      name: Legacy
      identifier: legacy
      variables:
        - {name: escaped, type: Secret, value: "p\\x61ss-\\u0077ord-ONE"}
        - name: folded
          type: Secret
          value: "first-half-TWO
            second-half-TWO"
        - name: block
          type: Secret
          value: >-
            block-line-THREE
            more-THREE
        - {name: listed, type: Secret, value: <+input>, default: dflt-FOUR, allowed_values: [dflt-FOUR, other-FIVE]}
        - {name: plain, type: String, value: visible-value}
      stages:
        - stage:
            identifier: s
            name: S
            steps:
              - step: {identifier: w, type: Wait, spec: {duration: 1s}}
    """
)
HIDDEN = ["pass", "word-ONE", "TWO", "THREE", "FOUR", "FIVE"]


@pytest.fixture
def legacy(personas) -> Pipeline:
    return factories.stored_pipeline(personas.project, OLD_DEFINITION)


def test_masking_finds_secrets_by_position_and_keeps_the_lines():
    masked = mask_secrets(OLD_DEFINITION)
    assert not [word for word in HIDDEN if word in masked]
    assert "visible-value" in masked and "value: <+input>" in masked
    assert len(masked.split("\n")) == len(OLD_DEFINITION.split("\n"))


def test_the_definition_and_history_pages_never_show_them(client, personas, legacy):
    client.force_login(personas.admin)
    for name in ("pipeline_definition", "pipeline_history", "pipeline_edit"):
        html = client.get(reverse(name, args=["acme", "web", "legacy"])).content.decode()
        leaked = [word for word in HIDDEN if word in html]
        assert not leaked, (name, leaked)
