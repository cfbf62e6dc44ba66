"""What the runs list, the chart and the compare form search for: one :class:`RunFilter`.

The runs page takes a status, a system under test, a tag, a free-text search
(``q``: run id, system under test, a tag, a metadata value) and a filter in
the language of ``list_runs(where=...)`` (:mod:`runstore.model.query`). The
free text becomes a syntax tree, never text pasted into a filter, so nothing
typed into the box can change what the filter means; the whole is rendered
back to text with :func:`~runstore.model.query.render` for ``list_runs``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from runstore.model.errors import InvalidInputError
from runstore.model.query import And, Contains, Expr, Field, Like, Or, parse_where, render

__all__ = ["MAX_SEARCH", "SEARCHED_KEYS", "RunFilter", "like_escape"]

MAX_SEARCH: Final = 200
"""The most characters of free text searched for."""
SEARCHED_KEYS: Final = 20
"""The free text is looked for in at most this many metadata keys (the first, sorted)."""


def like_escape(text: str) -> str:
    """``text`` as a LIKE pattern that matches it literally (``%``, ``_`` and ``\\`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class RunFilter:
    """The runs a page is about, as its query string says."""

    statuses: tuple[str, ...] = ()
    sut: str = ""
    tag: str = ""
    q: str = ""
    where: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """Other parameters to keep in links (``metric``, ``limit``)."""

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, keep: Sequence[str] = ()) -> RunFilter:
        getlist = getattr(params, "getlist", None)
        statuses = getlist("status") if getlist is not None else [params.get("status", "")]
        q = (params.get("q") or "").strip()
        if len(q) > MAX_SEARCH:
            raise InvalidInputError(
                f"the search text is {len(q)} characters long; at most {MAX_SEARCH} are searched",
                details={"length": len(q), "limit": MAX_SEARCH},
            )
        return cls(
            statuses=tuple(s for s in statuses if s),
            sut=params.get("sut") or "",
            tag=params.get("tag") or "",
            q=q,
            where=(params.get("where") or "").strip(),
            extra=tuple((k, params[k]) for k in keep if params.get(k)),
        )

    def parsed_where(self) -> Expr | None:
        """The ``where`` box as a tree; a malformed filter is an ``InvalidInputError``."""
        return parse_where(self.where) if self.where else None

    def search_tree(self, metadata_keys: Collection[str]) -> Expr | None:
        """The free text as a filter: a case-insensitive substring of the run id, the
        system under test or a metadata value (of the first :data:`SEARCHED_KEYS`
        keys), or exactly a tag."""
        if not self.q:
            return None
        pattern = f"%{like_escape(self.q)}%"
        items: list[Expr] = [
            Like(Field("run_id"), pattern, case_insensitive=True),
            Like(Field("sut_name"), pattern, case_insensitive=True),
            Contains(Field("tags"), self.q),
        ]
        for key in sorted(metadata_keys)[:SEARCHED_KEYS]:
            if key:
                items.append(Like(Field("metadata", key), pattern, case_insensitive=True))
        return Or(tuple(items))

    def list_where(self, metadata_keys: Collection[str]) -> str | None:
        """The text for ``list_runs(where=...)``: the ``where`` box and the search, both."""
        trees = [t for t in (self.parsed_where(), self.search_tree(metadata_keys)) if t]
        if not trees:
            return None
        return render(trees[0] if len(trees) == 1 else And(tuple(trees)))

    def pairs(self) -> list[tuple[str, str]]:
        """The filter as query parameters (empty ones left out)."""
        found = [("status", s) for s in self.statuses]
        found += [(k, v) for k, v in (("sut", self.sut), ("tag", self.tag)) if v]
        found += [(k, v) for k, v in (("q", self.q), ("where", self.where)) if v]
        return found + list(self.extra)

    def query(self, **more: str | int) -> str:
        """A query string for a link that keeps this filter (``more`` added or replaced)."""
        pairs = [(k, v) for k, v in self.pairs() if k not in more]
        pairs += [(k, str(v)) for k, v in more.items() if v not in ("", None)]
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.sut or self.tag or self.q or self.where)
