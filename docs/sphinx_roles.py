"""A griffe extension for the API reference: dcsm's docstrings are written with Sphinx roles
(:func:`dcsm.explain`, :class:`~dcsm.pipeline.result.SaliencyResult`, :math:`M_c`...), which
Markdown does not know. Before mkdocstrings renders a docstring, each role becomes an optional
cross-reference: a link where the name is documented in the site, plain code where it is not
(a private helper, a relative name, torch), so no role can break ``mkdocs build --strict``.
Several parameters described in one entry (``a, b: ...``) become one entry each.
``:math:`` becomes inline code and a ``.. math::`` block a code block; a paragraph ending in
reST's ``::`` ends in ``:`` before its (indented, so Markdown's) code block. A name without its
module (:func:`main`) is looked up in the scopes around the docstring. Loaded by ``mkdocs.yml``
(the python handler's ``extensions``); not part of the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: ``:role:`target``` or ``:role:`~target``` (the tilde shows the last dotted part only).
ROLE = re.compile(r":(?P<role>func|class|meth|attr|data|mod|exc|obj|math):`(?P<target>[^`]+)`")


def _resolve(target: str, obj: griffe.Object | None) -> str:
    """``target`` as a full path: as given, or within the first scope around ``obj`` with it."""
    first, _, rest = target.partition(".")
    scope = obj
    while scope is not None:
        member = scope.members.get(first)
        if member is not None:  # an imported name: where it is defined (and documented)
            path = member.target_path if member.is_alias else member.path
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return target


def _replace(match: re.Match[str], obj: griffe.Object | None = None) -> str:
    role, target = match["role"], match["target"].strip()
    if role == "math":
        return f"`{target}`"
    short = target.startswith("~")
    written = target = target.lstrip("~.")
    if not target.startswith("dcsm."):
        target = _resolve(target, obj)
    title = written.rsplit(".", 1)[-1] if short else written
    title = html.escape(title + ("()" if role in ("func", "meth") and "(" not in title else ""))
    return (f'<autoref identifier="{html.escape(target)}" optional>'
            f"<code>{title}</code></autoref>")


GROUPED = re.compile(r"^(?P<indent>\s+)(?P<names>\w+(?:, \w+)+): (?P<text>.*)$")
NAMES_GO_ON = re.compile(r"\s+\w+(?:, \w+)*,")
MATH = re.compile(r"^(?P<indent>\s*)\.\. math::\s*(?P<first>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(lines: list[str]) -> list[str]:
    """``.. math::`` and its indented lines as a fenced code block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = MATH.match(lines[i])
        if match is None:
            out.append(lines[i][:-2] + ":" if lines[i].endswith("::") else lines[i])
            i += 1
            continue
        indent, body = len(match["indent"]), [match["first"]] if match["first"] else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        least = min((_indent(b) for b in body if b.strip()), default=0)
        pad = " " * indent
        out += ["", f"{pad}```text", *(pad + b[least:] for b in body), f"{pad}```", ""]
    return out


def _parameters(obj: griffe.Object | None) -> set[str]:
    try:
        return {p.name for p in obj.parameters} if obj is not None else set()  # type: ignore[union-attr]
    except (AttributeError, griffe.AliasResolutionError):  # not a function or class
        return set()


def _grouped_parameters(lines: list[str], names: set[str]) -> list[str]:
    """``a, b, c: text`` in an argument list as ``a: text``, then ``b`` and ``c`` "as ``a``".

    Google-style sections name one parameter an entry; dcsm's docstrings sometimes describe
    several together (the segmenters' settings), which griffe would report as one unknown name.
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line, end = lines[i], i
        while NAMES_GO_ON.fullmatch(line) and end + 1 < len(lines):  # names wrapped over lines
            end += 1
            line = f"{line} {lines[end].strip()}"
        match = GROUPED.match(line)
        group = match["names"].split(", ") if match else []
        if not group or not set(group) <= names:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        out.append(f"{indent}{group[0]}: {match['text']}")
        i = end + 1
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > len(indent):
            out.append(lines[i])
            i += 1
        out += [f"{indent}{name}: as ``{group[0]}``." for name in group[1:]]
    return out


def convert(text: str, obj: griffe.Object | None = None) -> str:
    """The docstring ``text`` of ``obj`` with its Sphinx roles made optional cross-references."""
    lines = _grouped_parameters(text.splitlines(), _parameters(obj))
    text = "\n".join(_math_blocks(lines))
    return ROLE.sub(lambda match: _replace(match, obj), text)


class SphinxRoles(griffe.Extension):
    """Rewrites the docstrings of a package once griffe has loaded all of it (so that a class's
    parameters, read from its ``__init__``, are known)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
            todo += [m for m in obj.members.values() if not m.is_alias]
