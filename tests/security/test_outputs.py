"""Outputs written to ``$STAGELINE_OUTPUT`` (finding 3): a line ends at ``\\n`` and nowhere else,
and a value holding line breaks is written in the delimiter form, so that a value cannot forge
or overwrite another output."""

from __future__ import annotations

import pytest

from executions.models import StepRun
from executions.runners.shell import parse_outputs
from executions.services import run_pipeline
from executions.states import Status
from tests.helpers.factories import make_pipeline, serial_pipeline, shell_stage
from tests.helpers.runs import wait_for_status


def test_carriage_returns_and_unicode_line_separators_do_not_start_a_line():
    raw = "image=real\nnote=a\rimage=forged\nmore=b\u2028image=forged\u2029x\x85y\x0bz\x0c\n"
    outputs, problems = parse_outputs(raw.encode(), [])
    assert outputs == {
        "image": "real",
        "note": "a\rimage=forged",
        "more": "b\u2028image=forged\u2029x\x85y\x0bz\x0c",
    }
    assert problems == []


def test_the_delimiter_form_keeps_a_multi_line_value_whole():
    raw = "image=real\nnotes<<EOF_42\nline one\nimage=forged\n\nEOF_42\nafter=1\n"
    outputs, problems = parse_outputs(raw.encode(), [])
    assert outputs == {"image": "real", "notes": "line one\nimage=forged\n", "after": "1"}
    assert problems == []


def test_a_delimiter_that_never_comes_drops_the_value_and_says_so():
    outputs, problems = parse_outputs(b"a=1\nnotes<<END\nimage=forged\n", [])
    assert outputs == {"a": "1"}
    assert problems == ["output notes: no line 'END' ends its value; ignored"]


def test_key_value_lines_keep_their_old_meaning():
    raw = b"  spaced = v=1 \nnot a key=x\n=nothing\nplain line\nlast=one\nlast=two"
    outputs, _ = parse_outputs(raw, [])
    assert outputs == {"spaced": " v=1 ", "last": "two"}


def test_secrets_are_masked_in_both_forms():
    raw = b"token=abc-s3cret\nblock<<X\nhas s3cret inside\nX\n"
    outputs, _ = parse_outputs(raw, ["s3cret"])
    assert outputs == {"token": "abc-***", "block": "has *** inside"}


FORGERY = """
    - stage:
        identifier: source
        name: Source
        steps:
          - step:
              identifier: run
              type: ShellScript
              spec:
                script: |
                  printf 'msg<<EOF_1\\nhello\\nimage=evil\\nEOF_1\\n' >> "$STAGELINE_OUTPUT"
                  printf 'cr=a\\rimage=evil\\n' >> "$STAGELINE_OUTPUT"
                  printf 'ls=b\\342\\200\\250image=evil\\n' >> "$STAGELINE_OUTPUT"
"""


@pytest.mark.engine
def test_a_value_holding_line_breaks_cannot_overwrite_an_earlier_output(worker, personas):
    """A value with a line break (here an earlier stage's multi-line output, as an input holding
    one would be) reaches a later step, which writes it after its own ``image``: in the
    delimiter form it stays one value, and ``\\r`` or U+2028 never split a ``key=value`` line."""
    consumer = shell_stage(
        "consumer",
        """
        echo "image=real" >> "$STAGELINE_OUTPUT"
        { echo "copy<<EOF_$RANDOM$RANDOM"; echo "<+pipeline.stages.source.output.msg>"; } > block
        { cat block; head -1 block | cut -c7-; } >> "$STAGELINE_OUTPUT"
        echo "cr=<+pipeline.stages.source.output.cr>" >> "$STAGELINE_OUTPUT"
        echo "ls=<+pipeline.stages.source.output.ls>" >> "$STAGELINE_OUTPUT"
        """,
    )
    pipeline = make_pipeline(personas.project, serial_pipeline("forge", [FORGERY, consumer]))
    execution = run_pipeline(pipeline=pipeline, user=personas.executor, inputs={})
    execution = wait_for_status(execution, {Status.SUCCESS, Status.FAILED})
    assert execution.status == Status.SUCCESS
    source = StepRun.objects.get(execution=execution, stage_run__identifier="source")
    assert source.outputs == {
        "msg": "hello\nimage=evil",
        "cr": "a\rimage=evil",
        "ls": "b\u2028image=evil",
    }
    consumer_step = StepRun.objects.get(execution=execution, stage_run__identifier="consumer")
    assert consumer_step.outputs == {
        "image": "real",
        "copy": "hello\nimage=evil",
        "cr": "a\rimage=evil",
        "ls": "b\u2028image=evil",
    }
