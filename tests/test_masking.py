"""The one secret-masking rule (``stageline.masking``), and the surfaces that used to apply
another rule: the definition page and the version history masked a secret only on its own
variable's lines, and step logs masked a short secret inside other words."""

from __future__ import annotations

import textwrap

import pytest
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from executions.models import LogChunk, Status, StepRun
from executions.runners.shell import LogWriter
from executions.services import run_pipeline
from executions.transitions import transition
from pipelines.spec.redact import mask_pair, mask_secrets
from stageline.masking import StreamMasker, mask
from tests.helpers import factories

# --- the rule ---------------------------------------------------------------------------------


def test_a_value_is_masked_wherever_it_appears_even_inside_words():
    assert mask("token=hunter2; xhunter2x hunter2", ["hunter2"]) == "token=***; x***x ***"


def test_a_short_value_is_masked_only_as_a_whole_token():
    assert mask("ab", ["ab"]) == "***"  # a field holding only the secret
    assert mask("code: ab, (ab) ab.", ["ab"]) == "code: ***, (***) ***."
    assert mask("about cab ab_1 xab", ["ab"]) == "about cab ab_1 xab"


def test_a_three_character_value_is_masked_inside_words():
    assert mask("abcdef", ["cde"]) == "ab***f"


def test_a_multiline_value_is_masked_whole_and_line_by_line():
    key = "-----BEGIN KEY-----\nMIIEabc\n-----END KEY-----"
    assert mask(f"key:\n{key}\nok", [key]) == "key:\n***\nok"
    # as a YAML block, or in a diff, its lines appear apart, indented or prefixed
    block = "value: |\n    -----BEGIN KEY-----\n+    MIIEabc\n    -----END KEY-----\n"
    assert mask(block, [key]) == "value: |\n    ***\n+    ***\n    ***\n"


def test_a_text_shown_with_line_numbers_keeps_its_lines():
    text = "a\nkey-line-one\nkey-line-two\nb"
    masked = mask(text, ["key-line-one\nkey-line-two"], keep_lines=True)
    assert masked == "a\n***\n\nb"


def test_overlapping_secrets_are_masked_as_one_run_longest_first():
    assert mask("xx abcdef yy", ["abc", "abcdef"]) == "xx *** yy"
    assert mask("xxabcdefyy", ["abcd", "cdef"]) == "xx***yy"  # no character of either shows


def test_empty_values_and_no_secrets_leave_the_text_alone():
    assert mask("a b c", []) == "a b c"
    assert mask("a b c", [""]) == "a b c"


def test_a_secret_split_across_writes_is_masked_in_a_stream():
    masker = StreamMasker(["hunter2", "ab"])
    out = b"".join(
        [masker.feed(b"pw: hun"), masker.feed(b"ter2 and a"), masker.feed(b"b", final=False)]
    )
    out += masker.feed(b"out ab", final=True)
    assert out == b"pw: *** and about ***"


@given(
    text=st.text(alphabet="ab c_\né-", max_size=40),
    secrets=st.lists(st.text(alphabet="ab c_\né-", min_size=1, max_size=5), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
)
def test_a_stream_cut_anywhere_gives_what_masking_the_whole_output_gives(text, secrets, cuts):
    data = text.encode()
    masker = StreamMasker(secrets)
    out, previous = b"", 0
    for cut in sorted(min(c, len(data)) for c in cuts):
        out += masker.feed(data[previous:cut])
        previous = cut
    out += masker.feed(data[previous:], final=True)
    assert out == mask(text, secrets).encode()


# --- the surfaces that applied another rule ---------------------------------------------------

SECRET_PIPELINE = textwrap.dedent(
    """\
    pipeline:
      name: Secretive
      identifier: secretive
      variables:
        - name: api_key
          type: Secret
          value: fixed-secret-value
      stages:
        - stage:
            identifier: call
            name: Call
            steps:
              - step:
                  identifier: curl
                  type: ShellScript
                  timeout: 1m
                  spec:
                    script: echo "calling with fixed-secret-value"
    """
)


def page(client, name: str) -> str:
    response = client.get(reverse(name, args=["acme", "web", "secretive"]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_the_history_diff_masks_the_value_on_lines_that_are_not_the_secrets_own(client, personas):
    factories.stored_pipeline(  # stored before literal secrets were refused at save
        personas.project,
        SECRET_PIPELINE,
        SECRET_PIPELINE.replace('"calling with', '"now calling with'),
    )
    client.force_login(personas.viewer)
    html = page(client, "pipeline_history")
    assert "fixed-secret-value" not in html
    added = [line for line in html.splitlines() if 'class="diff-add"' in line]
    assert any("script: echo &quot;now calling with ***&quot;" in line for line in added), added


def test_a_definition_masks_a_secret_written_with_escapes_wherever_its_value_appears():
    text = textwrap.dedent(
        """\
        pipeline:
          variables:
            - {name: key, type: Secret, value: "p\\x61ss-word-1"}
          script: echo pass-word-1
        """
    )
    masked = mask_secrets(text)
    assert "pass-word-1" not in masked and "x61" not in masked
    assert masked.splitlines()[3] == "  script: echo ***"


def test_two_versions_shown_together_mask_each_others_secrets():
    old = "pipeline:\n  script: echo made-secret-later\n"
    new = "pipeline:\n  variables:\n    - {name: k, type: Secret, value: made-secret-later}\n"
    shown_old, shown_new = mask_pair(old, new)
    assert "made-secret-later" not in shown_old + shown_new
    assert shown_old == "pipeline:\n  script: echo ***\n"


@pytest.mark.django_db
def test_the_definition_page_masks_the_value_on_every_line(client, personas):
    factories.stored_pipeline(personas.project, SECRET_PIPELINE)
    client.force_login(personas.viewer)
    html = page(client, "pipeline_definition")
    assert "fixed-secret-value" not in html
    assert "script: echo &quot;calling with ***&quot;</span>" in html


@pytest.mark.django_db
def test_a_step_log_masks_a_short_secret_only_as_a_whole_word(personas):
    pipeline = factories.make_pipeline(
        personas.project,
        factories.serial_pipeline("short", [factories.shell_stage("build", "echo hi")]),
        user=personas.admin,
    )
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    step = StepRun.objects.filter(execution=execution).first()
    transition(step, to=Status.RUNNING)
    writer = LogWriter(step, ["ab", "hunter2"])
    for piece in (b"about to use ab and hun", b"ter2\n"):
        writer.feed(piece)
    writer.flush(final=True)
    text = "".join(LogChunk.objects.filter(step_run=step).values_list("text", flat=True))
    assert text == "about to use *** and ***\n"
