"""What a reader may see of a definition: the text with every Secret variable's literals hidden.

A Secret variable's ``value`` (unless it is ``<+input>`` or a single expression such as
``<+secrets.NAME>``), ``default`` and ``allowed_values`` are replaced by ``***`` where they are
written, found by their positions in the parsed YAML rather than by searching for their text: a
value written with escapes (``"\\x41…"``), folded or quoted across lines is hidden all the same.
Then the values those literals stand for (and ``also``, the secrets of another version shown
beside this one) are masked wherever else they appear in the text, a script line that echoes
one for instance, by the one rule of ``stageline.masking``. Line numbers are kept (a hidden
value spanning lines leaves empty lines), so ``#L14`` links and the editor's line numbers stay
true. Saving refuses literal secrets today; this protects the
versions stored before that, on the Definition and History pages and in the retry dialog's diff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml

from pipelines.spec.loader import _Loader
from pipelines.spec.model import RUNTIME_INPUT
from stageline.masking import MASK, mask

HIDDEN = MASK
UNREADABLE = "# This version cannot be read as YAML, so it is not shown (it may hold secrets).\n"
SINGLE_EXPRESSION_RE = re.compile(r"^\s*<\+[^<>]*>\s*$")
SECRET_KEYS = ("value", "default", "allowed_values")


def _shown_as_written(node: yaml.Node, key: str) -> bool:
    """A runtime input or a reference (``<+secrets.X>``) holds no secret of its own."""
    return (
        key == "value"
        and isinstance(node, yaml.ScalarNode)
        and (node.value == RUNTIME_INPUT or bool(SINGLE_EXPRESSION_RE.match(node.value)))
    )


def secret_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the Secret literals written in ``text``."""
    return [(node.start_mark.index, node.end_mark.index) for node in _secret_nodes(text)]


def secret_values(text: str) -> list[str]:
    """The values of the Secret literals written in ``text`` (escapes and folding read)."""
    return _values(_secret_nodes(text))


def _values(nodes: list[yaml.Node]) -> list[str]:
    scalars = [
        item
        for node in nodes
        for item in (node.value if isinstance(node, yaml.SequenceNode) else [node])
    ]
    return [item.value for item in scalars if isinstance(item, yaml.ScalarNode) and item.value]


def _secret_nodes(text: str) -> list[yaml.Node]:
    """The value nodes of the Secret literals written in ``text``."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    found: list[yaml.Node] = []
    pending: list[yaml.Node] = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, yaml.MappingNode):
            pairs = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
            kind = pairs.get("type")
            if isinstance(kind, yaml.ScalarNode) and kind.value == "Secret":
                for key in SECRET_KEYS:
                    value = pairs.get(key)
                    if value is not None and not _shown_as_written(value, key):
                        found.append(value)
            for key_node, value_node in node.value:
                pending += [key_node, value_node]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value
    return found


def mask_secrets(text: str, also: Iterable[str] = ()) -> str:
    """``text`` with every Secret variable's literals replaced by ``***``, and their values (and
    ``also``) masked wherever else they appear (lines kept)."""
    try:
        nodes = _secret_nodes(text)
    except yaml.YAMLError:
        return UNREADABLE
    values = _values(nodes)
    spans = [(node.start_mark.index, node.end_mark.index) for node in nodes]
    for start, end in sorted(spans, reverse=True):
        hidden = text[start:end]
        text = text[:start] + HIDDEN + "\n" * hidden.count("\n") + text[end:]
    return mask(text, [*values, *also], keep_lines=True)


def mask_pair(old: str, new: str) -> tuple[str, str]:
    """Two versions shown together (a diff): each masked, and the Secret values of either
    masked in both (a value that became a secret in ``new`` may be written plainly in ``old``)."""
    values: list[str] = []
    for text in (old, new):
        try:
            values += secret_values(text)
        except yaml.YAMLError:
            pass  # an unreadable side is not shown at all (``UNREADABLE``)
    return mask_secrets(old, values), mask_secrets(new, values)
