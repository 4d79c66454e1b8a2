"""The one secret-masking rule: a secret's value never reaches a person or stored output.

Every place that shows text to a person or stores a step's output (logs, outputs, approval
messages, the definition page, version-history and retry diffs, command output) masks it here:

- each occurrence of a secret's value is replaced by ``***``;
- a value shorter than ``MIN_INSIDE_WORDS`` (3) characters is replaced only where it stands as
  a whole token (not directly preceded or followed by a letter, a digit or ``_``), so a
  one-letter secret does not shred every word; a field whose whole value is such a secret is
  still masked (it is a whole token);
- a value of several lines is also masked line by line (each line of 3 characters or more),
  so it stays hidden where its lines appear apart (a YAML block, a diff, an indented dump);
- occurrences that overlap (one secret inside another, or two that share characters) are
  masked as one run: no character of any secret is shown.

``mask`` applies the rule to a text; ``StreamMasker`` applies it to output arriving in pieces
(a secret cut by a read boundary is masked all the same, and the result is the same as
``mask`` of the whole output).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MASK = "***"
MIN_INSIDE_WORDS = 3


def secret_needles(secrets: Iterable[str]) -> list[str]:
    """The texts to look for: each non-empty value, and each line (3+ characters) of a
    multi-line value; longest first, without repeats."""
    needles: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        needles.add(secret)
        lines = secret.splitlines()
        if len(lines) > 1:
            needles.update(line.strip() for line in lines if len(line.strip()) >= MIN_INSIDE_WORDS)
    return sorted(needles, key=lambda n: (-len(n), n))


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _char_before(data: str | bytes, index: int) -> str:
    """The character that ends at ``index`` ("" at the start)."""
    if index <= 0:
        return ""
    if isinstance(data, str):
        return data[index - 1]
    start = index - 1
    while start > 0 and index - start < 4 and data[start] & 0xC0 == 0x80:
        start -= 1
    return data[start:index].decode("utf-8", errors="replace")[-1:]


def _char_after(data: str | bytes, index: int) -> str:
    """The character that starts at ``index`` ("" at the end)."""
    if index >= len(data):
        return ""
    if isinstance(data, str):
        return data[index]
    return data[index : index + 4].decode("utf-8", errors="replace")[:1]


def _spans[T: (str, bytes)](
    data: T, needles: Sequence[tuple[T, bool]], start: int
) -> list[tuple[int, int]]:
    """Where ``data`` must be masked, as merged (start, end) runs; only occurrences that begin
    at ``start`` or later count (``data[:start]`` is context already dealt with)."""
    found: list[tuple[int, int]] = []
    for needle, whole_token in needles:
        at = data.find(needle, start)
        while at != -1:
            end = at + len(needle)
            if not whole_token or (
                not _is_word_char(_char_before(data, at))
                and not _is_word_char(_char_after(data, end))
            ):
                found.append((at, end))
            at = data.find(needle, at + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for begin, end in found:
        if merged and begin < merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return merged


def _prepared(secrets: Iterable[str]) -> list[tuple[str, bool]]:
    return [(n, len(n) < MIN_INSIDE_WORDS) for n in secret_needles(secrets)]


def mask(text: str, secrets: Iterable[str], *, keep_lines: bool = False) -> str:
    """``text`` with every secret value replaced by ``***``, by the rule of this module.

    ``keep_lines``: a masked run that spans line breaks keeps them (``***`` then the same number
    of empty lines), for texts shown with line numbers (a definition and its ``#L14`` links).
    """
    needles = _prepared(secrets)
    if not needles or not text:
        return text
    pieces: list[str] = []
    done = 0
    for begin, end in _spans(text, needles, 0):
        hidden = MASK + "\n" * text.count("\n", begin, end) if keep_lines else MASK
        pieces += [text[done:begin], hidden]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


class StreamMasker:
    """``mask`` for output that arrives in pieces of bytes (UTF-8).

    The last ``len(longest secret) + 4`` bytes of each piece wait for the next one, so that a
    secret cut by a read boundary (and the character after a short secret) is seen whole;
    ``feed(..., final=True)`` lets everything out. The bytes given out, joined, equal
    ``mask`` of the whole output.
    """

    def __init__(self, secrets: Iterable[str]):
        self.needles: list[tuple[bytes, bool]] = [
            (needle.encode("utf-8"), short) for needle, short in _prepared(secrets)
        ]
        longest = max((len(needle) for needle, _ in self.needles), default=0)
        self.hold = longest + 4 if longest else 0
        self.context = longest + 4  # raw bytes already given out, kept as context
        self.before = b""  # the last ``context`` raw bytes given out
        self.pending = b""  # raw bytes not given out yet
        self.masked_to_end = False  # the bytes given out end inside a masked run

    def feed(self, data: bytes, final: bool = False) -> bytes:
        """Take the next piece of output; return the masked bytes that can be given out."""
        if not self.needles:
            return data
        work = self.before + self.pending + data
        offset = len(self.before)
        cut = len(work) if final else max(offset, len(work) - self.hold)
        out: list[bytes] = []
        done = offset
        for begin, end in _spans(work, self.needles, max(0, offset - self.context)):
            if end <= offset:
                continue  # wholly in what was given out already
            if begin >= cut:
                break
            if begin < offset and self.masked_to_end:
                done = end  # continues the run the last piece ended with
                continue
            begin = max(begin, offset)
            out += [work[done:begin], MASK.encode()]
            done = end
        cut = max(cut, done)
        out.append(work[done:cut])
        self.masked_to_end = done == cut and done > offset
        self.before = work[max(0, cut - self.context) : cut]
        self.pending = work[cut:]
        return b"".join(out)
