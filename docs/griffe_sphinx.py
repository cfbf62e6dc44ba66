"""Griffe extension: render runstore's Sphinx-flavoured docstrings in MkDocs.

runstore's docstrings follow pytest's pattern (``:param x:``, ``:class:`~a.B```,
``.. versionadded::``). mkdocstrings' Sphinx parser reads the ``:param:``
fields; this extension turns the rest into Markdown before the docstrings are
parsed:

* a cross-reference role (``:class:``, ``:meth:``, ``:func:``, ``:mod:``, ...)
  becomes an *optional* autorefs link: a link when the target is rendered in
  the API reference, plain code otherwise (no warning, no broken link); names
  are resolved in the docstring owner's scope, as Sphinx does;
* ``.. versionadded:: X`` / ``.. versionchanged:: X`` / ``.. deprecated:: X``
  become one italic line ("Added in version X.");
* a paragraph ending in ``::`` ends in ``:`` (its indented literal block is
  already a Markdown code block), and ``>>>`` examples become ``pycon`` code
  blocks instead of nested block quotes;
* field lists (``:param x:``, ``:ivar y:``, ...) move to the end. In Sphinx a
  field list ends at the first unindented paragraph after it; griffe's parser
  would read that paragraph ("Every implementation is called.") as part of
  the last field's description.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`")
_VERSION = re.compile(
    r"^(?P<indent>[ \t]*)\.\. (?P<kind>versionadded|versionchanged|deprecated):: *(?P<version>\S+)"
    r"(?P<text>[^\n]*)$",
    re.MULTILINE,
)
_FIELD = re.compile(
    r":(?:param|parameter|arg|argument|key|keyword|type|raises?|except|exception"
    r"|var|ivar|cvar|vartype|returns?|rtype|yields?)\b[^:]*:"
)
_LITERAL = re.compile(r"(?P<before>^|[ \t]*)::$", re.MULTILINE)
_VERSION_WORDS = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}


def _resolve(obj: griffe.Object, path: str) -> str:
    """The full dotted path of ``path`` as seen from ``obj`` (best effort)."""
    head, _, rest = path.partition(".")
    if head.startswith(("runstore", "pluggy", "hypothesis", "logging", "threading")):
        return path
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    return path


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    target = match.group("target").strip()
    if target.startswith("~"):
        target = target[1:]
        title = target.rsplit(".", 1)[-1]
    else:
        title = target
    identifier = _resolve(obj, target)
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _version(match: re.Match[str]) -> str:
    words = _VERSION_WORDS[match.group("kind")]
    text = match.group("text").strip()
    line = f"*{words} {match.group('version')}.*"
    return f"{match.group('indent')}{line} {text}".rstrip()


def _fields_last(text: str) -> str:
    """Move every field (with its indented continuation lines) after the prose."""
    prose: list[str] = []
    fields: list[str] = []
    in_field = False
    for line in text.splitlines():
        if _FIELD.match(line):
            in_field = True
        elif in_field and line.strip() and not line[:1].isspace():
            in_field = False
        (fields if in_field else prose).append(line)
    if not fields:
        return text
    while prose and not prose[-1].strip():
        prose.pop()
    while fields and not fields[-1].strip():
        fields.pop()
    return "\n".join([*prose, "", *fields]) if prose else "\n".join(fields)


def _doctests_fenced(text: str) -> str:
    """Wrap each unindented ``>>>`` session (up to the next blank line) in a fence."""
    out: list[str] = []
    in_session = False
    for line in text.splitlines():
        if not in_session and line.startswith(">>>"):
            out.append("```pycon")
            in_session = True
        elif in_session and not line.strip():
            out.append("```")
            in_session = False
        out.append(line)
    if in_session:
        out.append("```")
    return "\n".join(out)


def _literal_marker(match: re.Match[str]) -> str:
    """reST: ``text::`` reads ``text:``; ``text ::`` and a lone ``::`` read as nothing."""
    line_start = match.start() == 0 or match.string[match.start() - 1] == "\n"
    return "" if match.group("before") or line_start else ":"


def markdown_docstring(obj: griffe.Object, text: str) -> str:
    """``text`` with Sphinx roles and version directives turned into Markdown."""
    text = _fields_last(text)
    text = _doctests_fenced(text)
    text = _LITERAL.sub(_literal_marker, text)
    text = _VERSION.sub(_version, text)
    return _ROLE.sub(lambda match: _link(obj, match), text)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring once the object tree is complete (names resolve then)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj, obj.docstring.value)
