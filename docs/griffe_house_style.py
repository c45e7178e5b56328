"""A griffe extension for the API reference: read two habits of the project's docstrings the way the
style sheet means them. The source files are not changed; only the text griffe parses is.

1. ``Example:`` sections. The style sheet names the doctest section ``Example:`` (singular);
   griffe's Google parser only knows ``Examples:`` and reads ``Example:`` as a Markdown admonition,
   where ``>>>`` lines turn into nested block quotes and doctest output such as
   ``[512, 256, 128, 99]`` into broken reference links. The heading is read as ``Examples:``.
2. Grouped parameters. ``Args:`` entries may document related parameters together
   (``rows, cols: (H,) and (W,) pixel indices``). griffe would take ``rows, cols`` for one unknown
   parameter; the entry is read as one entry per name with the shared description, so every name is
   still checked against the signature (``--strict`` fails on a documented name that does not exist).

Loaded by ``mkdocs.yml`` (the mkdocstrings ``extensions`` option).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_ARGS_HEADING = re.compile(r"^(?P<indent>[ \t]*)(?:Args|Arguments|Parameters|Params):[ \t]*$")
_GROUPED_ENTRY = re.compile(r"^(?P<names>\w+(?:[ \t]*,[ \t]*\w+)+):(?P<rest>(?:[ \t].*)?)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_parameters(text: str) -> str:
    """``a, b: text`` entries of ``Args:`` sections as ``a: text`` and ``b: text`` (with the entry's
    continuation lines repeated under each name)."""
    lines = text.split("\n")
    out: list[str] = []
    section: int | None = None  # indentation of the current Args heading
    item: int | None = None  # indentation of its entries
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _ARGS_HEADING.match(line)
        if heading:
            section, item = len(heading["indent"]), None
            out.append(line)
            i += 1
            continue
        if section is not None and line.strip():
            indent = _indent(line)
            if indent <= section:
                section = None
            elif item is None or indent == item:
                item = indent
                grouped = _GROUPED_ENTRY.match(line.strip())
                if grouped:
                    end = i + 1
                    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
                        end += 1
                    while end > i + 1 and not lines[end - 1].strip():  # keep trailing blank lines outside
                        end -= 1
                    for name in (n.strip() for n in grouped["names"].split(",")):
                        out.append(f"{' ' * indent}{name}:{grouped['rest']}")
                        out.extend(lines[i + 1 : end])
                    i = end
                    continue
        out.append(line)
        i += 1
    return "\n".join(out)


class HouseStyle(griffe.Extension):
    """Apply the two readings above to every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if "Example:" in value:
            value = _EXAMPLE_HEADING.sub(r"\g<indent>Examples:", value)
        if "," in value:
            value = split_grouped_parameters(value)
        docstring.value = value
