"""Load pipeline YAML safely, keeping the line of every mapping, key, value and list item.

Parsing refuses YAML features that only serve to attack a parser (anchors and aliases, deep
nesting, huge documents, tags that build objects) before building anything.

Scalars are read as text: only ``true``/``false`` (booleans) and ``null``/``~``/nothing are
interpreted, so ``1.10`` stays "1.10", ``12:30`` stays "12:30" and ``no`` stays "no" (the
YAML 1.1 surprises that turn a version into a float or Norway into false do not apply).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from django.conf import settings

from pipelines.spec.errors import SpecError, SpecErrors, short

MAX_DEPTH = 20
ALLOWED_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class LMap(dict):
    """A mapping that remembers its line, the line of each key and where each value starts."""

    line: int = 0
    key_lines: dict
    value_marks: dict  # key -> (line of the value's first character, scalar style or None)


class LList(list):
    line: int = 0
    item_lines: list


class _Resolver(yaml.resolver.Resolver):
    """Reads every plain scalar as text except true/false and null (see the module docstring)."""

    yaml_implicit_resolvers: dict = {}


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)

# libyaml parses ten times faster than the pure-Python parser: a definition at the size limit
# is read in well under a second instead of twenty, so saving one cannot tie up a web worker.
LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
if LIBYAML:
    from yaml._yaml import CParser  # the C extension: present only when LIBYAML

    class _Loader(CParser, yaml.constructor.SafeConstructor, _Resolver):
        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            _Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _Loader(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        yaml.constructor.SafeConstructor,
        _Resolver,
    ):
        def __init__(self, stream: str):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            _Resolver.__init__(self)


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _node_to_python(loader: Any, node: yaml.Node, depth: int) -> Any:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)
    if node.tag not in ALLOWED_TAGS:
        raise SpecError(f"the YAML tag '{short(_tag_name(node.tag))}' is not allowed", line)
    if isinstance(node, yaml.MappingNode):
        result = LMap()
        result.line = line
        result.key_lines = {}
        result.value_marks = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in ALLOWED_TAGS:
                raise SpecError("mapping keys must be plain words", key_node.start_mark.line + 1)
            key = key_node.value
            if key in result:
                raise SpecError(f"duplicate key '{short(key)}'", key_node.start_mark.line + 1)
            result[key] = _node_to_python(loader, value_node, depth + 1)
            result.key_lines[key] = key_node.start_mark.line + 1
            style = value_node.style if isinstance(value_node, yaml.ScalarNode) else None
            result.value_marks[key] = (value_node.start_mark.line + 1, style)
        return result
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.line = line
        seq.item_lines = []
        for item in node.value:
            seq.append(_node_to_python(loader, item, depth + 1))
            seq.item_lines.append(item.start_mark.line + 1)
        return seq
    try:
        return loader.construct_object(node)
    except Exception:  # a bad !!int / !!float / !!bool value: its constructor raises anything
        raise SpecError(
            f"'{short(node.value)}' is not a valid {_tag_name(node.tag)} value", line
        ) from None


def _check_events(text: str) -> None:
    """Refuse anchors, aliases, unknown tags and deep nesting from the event stream.

    PyYAML's parser is iterative; its composer is recursive. Checking events first means a
    hostile document is refused before anything recursive or expensive runs.
    """
    depth = 0
    # PyYAML's stubs name only its own loader classes as ``Loader``.
    for event in yaml.parse(text, Loader=_Loader):  # type: ignore[arg-type]
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise SpecError("YAML anchors and aliases are not allowed", line)
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in ALLOWED_TAGS and tag != "!":
            raise SpecError(f"the YAML tag '{short(_tag_name(tag))}' is not allowed", line)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit >= 1024 and limit % 1024 == 0 else f"{limit} bytes"


def _yaml_reason(exc: yaml.MarkedYAMLError, text: str) -> str:
    problem, context = (exc.problem or "").strip(), (exc.context or "").strip()
    mark = exc.problem_mark
    if mark is not None and "cannot start any token" in problem:
        lines = re.split(r"\r\n|\r|\n", text)
        if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            return "a tab cannot indent YAML: use spaces"
    if problem and context:
        return f"{context}, {problem}" if problem.startswith("but ") else f"{problem} ({context})"
    return problem or context or "it is not valid YAML"


def load_yaml(text: str) -> Any:
    """Load YAML safely, with line numbers, refusing aliases, deep nesting and huge input."""
    limit = settings.STAGELINE_MAX_YAML_BYTES
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise SpecErrors([SpecError(f"the definition is larger than {_size(limit)}")])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise SpecErrors(
            [SpecError("invalid YAML: the text holds a character that is not valid Unicode", line)]
        ) from None
    try:
        _check_events(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise SpecError("the definition is empty", 1)
            return _node_to_python(loader, node, 0)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        if "nesting depth" in (exc.problem or ""):  # libyaml's own limit, met while reading ahead
            raise SpecErrors(
                [SpecError(f"the document nests deeper than {MAX_DEPTH} levels", line)]
            ) from None
        raise SpecErrors([SpecError(f"invalid YAML: {_yaml_reason(exc, text)}", line)]) from None
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in UTF-8 bytes, the Python reader in characters
        if LIBYAML:
            line = text.encode("utf-8")[: max(exc.position, 0)].count(b"\n") + 1
        else:
            line = text[: max(exc.position, 0)].count("\n") + 1
        if isinstance(exc.character, int):
            reason = f"the character #x{exc.character:04x} is not allowed"
        else:
            reason = "the text is not valid UTF-8"
        raise SpecErrors([SpecError(f"invalid YAML: {reason}", line)]) from None
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(f"invalid YAML: {exc}")]) from None
    except SpecError as exc:
        raise SpecErrors([exc]) from None
    except RecursionError:
        raise SpecErrors([SpecError("the document nests too deeply")]) from None
