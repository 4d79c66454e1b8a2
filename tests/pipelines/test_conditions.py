"""The ``when`` condition language: how it reads, how it evaluates, how it refuses nonsense,
and that a value can never change what a condition means."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.conditions import MAX_NESTING, evaluate_condition, is_truthy, parse_condition

VALUES = {
    "pipeline.variables.env": "prod",
    "pipeline.variables.region": "eu",
    "pipeline.variables.count": "10",
    "pipeline.variables.empty": "",
    "pipeline.variables.zero": "0",
    "pipeline.stages.build.output.changed": "true",
}


def run(text: str, values: dict[str, str] | None = None) -> bool:
    values = VALUES if values is None else values
    return evaluate_condition(text, lambda expr: values[expr])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<+pipeline.variables.env> == "prod"', True),
        ('<+pipeline.variables.env> == "dev"', False),
        ('<+pipeline.variables.env> != "dev"', True),
        ("<+pipeline.variables.env> == 'prod'", True),
        ('"prod" == <+pipeline.variables.env>', True),
        ('<+pipeline.variables.env> == "Prod"', False),  # text compares exactly
        ('<+pipeline.variables.env> == "prod" && <+pipeline.variables.region> == "eu"', True),
        ('<+pipeline.variables.env> == "prod" && <+pipeline.variables.region> == "us"', False),
        ('<+pipeline.variables.env> == "dev" || <+pipeline.variables.region> == "eu"', True),
        ('<+pipeline.variables.env> == "dev" || <+pipeline.variables.region> == "us"', False),
        ('!(<+pipeline.variables.env> == "dev")', True),
        ("!<+pipeline.variables.empty>", True),
        ("!!<+pipeline.variables.env>", True),
        ("<+pipeline.stages.build.output.changed>", True),
        ("<+ pipeline.variables.env >", True),  # spaces inside the expression are ignored
        ("true", True),
        ("false", False),
        ("TRUE && !False", True),
    ],
)
def test_conditions_evaluate_operators_and_operands(text, expected):
    assert run(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true || false && false", True),  # && binds tighter than ||
        ("(true || false) && false", False),
        ("false && true || true", True),
        ("!true == false", True),  # ! binds tighter than ==: (!true) == false
        ("!(true == false)", True),
        ("(true == false) == false", True),
        ("((((true))))", True),
    ],
)
def test_precedence_and_parentheses(text, expected):
    assert run(text) is expected


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("10", "10.0", True),
        ("010", "10", True),
        ("1e1", "10", False),  # no exponent in the number grammar: text
        ("-0", "0", True),
        (" 3 ", "3", False),  # surrounding spaces make it text
        ("10", "9", False),
        ("0.1", ".1", False),  # ".1" is not a number by the grammar: text
        ("1.0", "1.00", True),
        ("1e400", "1e500", False),  # exact decimals, no overflow to infinity
        ("nan", "nan", True),  # not a number: compared as text
        ("abc", "abc", True),
        ("1.0", "1.0.0", False),
        ("1_000", "1000", False),  # underscores make it text
        ("0x10", "16", False),
    ],
)
def test_numbers_compare_numerically_and_everything_else_as_text(left, right, equal):
    values = {"a": left}
    assert run(f'<+a> == "{right}"', values) is equal
    assert run(f'<+a> != "{right}"', values) is not equal


def test_a_number_literal_compares_with_a_numeric_value():
    assert run("<+pipeline.variables.count> == 10.0") is True
    assert run("<+pipeline.variables.count> != 10") is False
    assert run("<+pipeline.variables.count> == -15") is False


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "false",
        "FALSE",
        " False ",
        "no",
        "No",
        "null",
        "NULL",
        "none",
        "None",
        "0",
        "0.0",
        "-0",
        "00",
        " 0 ",
    ],
)
def test_falsy_values(value):
    assert is_truthy(value) is False
    assert run("<+v>", {"v": value}) is False
    assert run("!<+v>", {"v": value}) is True


@pytest.mark.parametrize(
    "value", ["true", "yes", "1", "-1", "0.5", "prod", "0x0", "off", "falsey", "'false'"]
)
def test_truthy_values(value):
    assert is_truthy(value) is True
    assert run("<+v>", {"v": value}) is True


@pytest.mark.parametrize(
    "value",
    [
        '" || true',
        '") || ("a" == "a',
        "' || '1' == '1",
        "true) || (true",
        "x || true",
        "<+pipeline.variables.secret>",
        'prod" && "',
        "\\",
        "\n|| true",
    ],
)
def test_a_value_can_never_change_the_condition_shape(value):
    seen: list[str] = []

    def resolve(expr: str) -> str:
        seen.append(expr)
        return value

    assert evaluate_condition('<+pipeline.variables.env> == "prod"', resolve) is False
    assert evaluate_condition('<+pipeline.variables.env> != "prod"', resolve) is True
    assert evaluate_condition("!<+pipeline.variables.env> && false", resolve) is False
    # the value is used as it is: never resolved again as an expression
    assert set(seen) == {"pipeline.variables.env"}


def test_a_value_equal_to_itself_is_equal_whatever_it_holds():
    tricky = '" == "x" || "'
    assert run("<+a> == <+b>", {"a": tricky, "b": tricky}) is True


def test_only_the_expressions_reached_are_resolved():
    seen: list[str] = []

    def resolve(expr: str) -> str:
        seen.append(expr)
        return "x"

    assert evaluate_condition("true || <+pipeline.variables.never>", resolve) is True
    assert seen == []


def test_a_missing_value_counts_as_empty():
    assert evaluate_condition('<+a> == ""', lambda expr: None) is True


def test_escaped_quotes_inside_strings_are_part_of_the_text():
    assert run('<+a> == "say \\"hi\\""', {"a": 'say "hi"'}) is True
    assert run("<+a> == 'it\\'s'", {"a": "it's"}) is True
    assert run('<+a> == "back\\\\slash"', {"a": "back\\slash"}) is True


def test_a_long_chain_of_alternatives_evaluates_without_recursion_limits():
    text = " || ".join(f'<+v> == "{n}"' for n in range(3000))
    assert run(text, {"v": "2999"}) is True
    assert run(text, {"v": "3000"}) is False
    assert run(" && ".join(["true"] * 3000)) is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the condition is empty"),
        ("   ", "the condition is empty"),
        ("<+a> ==", "the condition ends too early after '=='"),
        ("true &&", "the condition ends too early after '&&'"),
        ("!", "the condition ends too early after '!'"),
        ("(true", "a '(' is not closed in the condition"),
        ("true)", "a ')' has no matching '('"),
        ("()", "unexpected ')' in the condition (a value is missing)"),
        ("&& true", "unexpected '&&' in the condition (a value is missing)"),
        ('<+a> == "prod', "the text at '\"prod' has no closing \""),
        ("<+a> == 'prod", "the text at ''prod' has no closing '"),
        (
            "<+pipeline.variables.env == 1",
            "the expression at '<+pipeline.variables' is not closed with '>'",
        ),
        ('<+a> = "x"', "'=' alone is not an operator (use ==, !=, && or ||)"),
        ("true & false", "'&' alone is not an operator (use ==, !=, && or ||)"),
        ("true | false", "'|' alone is not an operator (use ==, !=, && or ||)"),
        ("<+a> == prod", "'prod' is not a value: quote text, as in \"prod\""),
        ("true and false", "'and' is not an operator here: use &&"),
        ("true OR false", "'OR' is not an operator here: use ||"),
        ("not true", "'not' is not an operator here: use !"),
        ("1 == 1 == 1", "comparisons cannot be chained: combine them with && or || (at '==')"),
        ("true false", "unexpected 'false' in the condition (missing && or ||?)"),
        ("<+a> > 3", "cannot read the condition at '> 3'"),
        ("@", "cannot read the condition at '@'"),
    ],
)
def test_malformed_conditions_are_refused_with_a_clear_message(text, message):
    with pytest.raises(ValueError) as caught:
        parse_condition(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("opening", ["(", "!"])
def test_nesting_is_limited(opening):
    closing = ")" if opening == "(" else ""
    ok = opening * MAX_NESTING + "true" + closing * MAX_NESTING
    assert evaluate_condition(ok, lambda expr: "") is (opening == "(" or MAX_NESTING % 2 == 0)
    too_deep = opening * (MAX_NESTING + 1) + "true" + closing * (MAX_NESTING + 1)
    with pytest.raises(ValueError, match=f"the condition nests deeper than {MAX_NESTING} levels"):
        parse_condition(too_deep)
    with pytest.raises(ValueError, match="nests deeper"):
        parse_condition(opening * 100_000 + "true" + closing * 100_000)


def test_a_condition_that_is_not_text_is_refused():
    with pytest.raises(ValueError, match="the condition must be text"):
        parse_condition(None)  # type: ignore[arg-type]


def test_evaluate_refuses_a_malformed_condition_before_resolving_anything():
    seen: list[str] = []
    with pytest.raises(ValueError, match="ends too early"):
        evaluate_condition("<+a> == ", lambda expr: seen.append(expr) or "")
    assert seen == []


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_random_text_is_parsed_or_refused_with_a_value_error(text):
    try:
        tree = parse_condition(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(evaluate_condition(text, lambda expr: ""), bool)
        assert tree is not None


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_value_compares_equal_only_to_itself_as_text(value):
    assert evaluate_condition("<+a> == <+b>", lambda expr: value) is True
    assert evaluate_condition('<+a> == "__never__"', lambda expr: value) is (value == "__never__")
