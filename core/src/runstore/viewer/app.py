"""The viewer's web application: server-rendered pages over the async API.

Starlette routes, Jinja2 templates shipped in the package (``templates/``,
``static/``), no JavaScript and nothing fetched from elsewhere. Every route
is ``GET`` (and ``HEAD``): no request can change the store. Run ids, stream
and artifact names from the URL go through the same validation as the API
(:mod:`runstore.model.names`), so a hostile name is a 400, never a path outside
the store. Only ``Host: 127.0.0.1`` / ``localhost`` is served (no DNS
rebinding), and artifacts are served as downloads or inert text, sandboxed.
Every response carries the security headers of :mod:`.security`; every page
is capped in bytes as well as in records (:mod:`.pages`).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, cast
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from runstore import __version__
from runstore.aio import AsyncRunView, AsyncStore
from runstore.aio import open as open_async
from runstore.analysis.compare import outcome_of
from runstore.cli.format import fmt_bytes, fmt_duration, fmt_time
from runstore.engine.store import DEFAULT_HEARTBEAT_SECONDS
from runstore.model.errors import InvalidInputError, NotFoundError, RunstoreError
from runstore.model.names import MAX_COMPONENT_BYTES, validate_stream_name
from runstore.model.run import TERMINAL_STATUSES, ArtifactRef, RunRecord, utcnow
from runstore.ops.damage import as_damaged_run
from runstore.spi.layout import ARTIFACTS_STREAM
from runstore.viewer.charts import Point, step_bars, timeline_svg, trend_svg
from runstore.viewer.comparing import Comparer
from runstore.viewer.pages import (
    PAGE_BYTES,
    RECORD_BYTES,
    Entry,
    Page,
    Tail,
    clip,
    instance_records,
    numbered,
    pretty,
)
from runstore.viewer.search import RunFilter
from runstore.viewer.security import RAW_CSP, SecurityHeaders, content_disposition

__all__ = ["STALE_AFTER", "create_app"]

INLINE_LIMIT: Final = 256 * 1024
"""Artifacts up to this size are shown in the page; larger ones are a download link.
The caller's state (``state.data``) is shown up to this many characters."""
PAGE_SIZE: Final = 50
LOG_LINES: Final = 200
STALE_AFTER: Final = timedelta(seconds=3 * DEFAULT_HEARTBEAT_SECONDS)
"""A run not finished whose heartbeat is older than this has lost its writer (3 beats)."""
LABEL_CHARS: Final = 200
"""Statuses and scenario ids are cut to this many characters in the chart."""
SCENARIOS: Final = 50
"""The chart's bars: scenarios beyond these many are counted together."""
RAW_CHUNK: Final = 1 << 20
"""A raw stream download is sent in chunks of about this many bytes."""
RUN_ARTIFACTS: Final = 200
"""The run page lists at most this many run-level artifacts."""
_SAFE_MEDIA: Final = frozenset({"application/json", "text/plain", "image/png", "image/jpeg"})
REFRESH_SECONDS: Final = 5
"""Pages of a live run (and the runs list while one is live) reload this often."""
CHART_RUNS: Final = 100
"""The chart across runs shows at most this many runs (the newest that match)."""
CHANGES_SHOWN: Final = 500
"""The compare page lists at most this many instances per kind of change."""
FAILING: Final = frozenset({"failed", "error"})
"""Instance outcomes that "next failed instance" stops at."""
SEARCH_CHARS: Final = 200
"""The most characters of an instance id or log text searched for on a run's page."""


# -- formatting helpers (template filters) -----------------------------------------


def _pass_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _quote(value: str) -> str:
    """A path segment for a URL (artifact names keep their slashes)."""
    return quote(value, safe="/")


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runstore.viewer", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=fmt_time,
        duration=fmt_duration,
        bytes=fmt_bytes,
        rate=_pass_rate,
        pretty=pretty,
        compact=_compact,
        clipped=lambda value: clip(value)[0],
        q=_quote,
    )
    env.globals.update(version=__version__, page_bytes=PAGE_BYTES, record_bytes=RECORD_BYTES)
    return env


# -- the pass/fail chart -------------------------------------------------------------


@dataclass
class Tally:
    """Instances counted by status, overall or for one scenario."""

    label: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def passed(self) -> int:
        return self.counts["passed"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def other(self) -> int:
        return sum(self.counts.values()) - self.passed - self.failed

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float | None:
        judged = self.passed + self.failed
        return self.passed / judged if judged else None


def chart_svg(tallies: list[Tally]) -> Markup:
    """Horizontal stacked bars (passed, failed, other) per tally, as inline SVG."""
    width, label_w, bar_h, gap = 720, 140, 22, 10
    bar_w = width - label_w - 190  # room for the counts after the longest bar
    height = len(tallies) * (bar_h + gap) + gap
    widest = max((t.total for t in tallies), default=0) or 1
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>passed and failed instances</title>",
    ]
    for row, tally in enumerate(tallies):
        y = gap + row * (bar_h + gap)
        label = escape(tally.label)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 6}" text-anchor="end" class="label">'
            f"{label}</text>"
        )
        x = float(label_w)
        for kind, count in (
            ("passed", tally.passed),
            ("failed", tally.failed),
            ("other", tally.other),
        ):
            if not count:
                continue
            w = bar_w * count / widest
            parts.append(
                f'<rect class="{kind}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}">'
                f"<title>{count} {kind}</title></rect>"
            )
            x += w
        summary = f"{tally.passed} passed, {tally.failed} failed"
        parts.append(f'<text x="{x + 8:.1f}" y="{y + bar_h - 6}" class="value">{summary}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped labels


# -- reading helpers -----------------------------------------------------------------


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, got {raw!r}") from None
    return max(low, min(high, value))


def _at_level(record: Any, level: str | None) -> bool:
    return not level or (isinstance(record, dict) and record.get("level") == level)


def _search_text(params: Mapping[str, str], name: str) -> str:
    text = (params.get(name) or "").strip()
    if len(text) > SEARCH_CHARS:
        raise InvalidInputError(
            f"{name} is {len(text)} characters long; at most {SEARCH_CHARS} are searched for",
            details={"parameter": name, "length": len(text), "limit": SEARCH_CHARS},
        )
    return text


def _mentions(record: Any, text: str) -> bool:
    """Whether a log line's message (or, for another record, its JSON) holds ``text``."""
    if not text:
        return True
    if isinstance(record, dict) and isinstance(record.get("message"), str):
        return text.lower() in record["message"].lower()
    return text.lower() in _compact(record).lower()


MAX_FAILED_NAMES: Final = 20
"""The instance table names at most this many failed assertions of an instance."""


async def _derived_columns(
    view: AsyncRunView, streams: Sequence[str], shown: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Steps and failed assertions of the instances ``shown``, counted from the streams.

    ``{instance_id: {"steps": n, "failed": [names]}}`` for the instances with
    records there; the table falls back to the record's own fields
    (``step_count``, ``failed_assertions``) for the others. Only the shown
    instances are tallied, so the memory is one page's worth.
    """
    wanted = {r["instance_id"] for r in shown if isinstance(r.get("instance_id"), str)}
    found: dict[str, dict[str, Any]] = {}
    if not wanted:
        return found
    if "steps" in streams:
        async for _, _, record in numbered(view, "steps"):
            if isinstance(record, dict) and record.get("instance_id") in wanted:
                mine = found.setdefault(record["instance_id"], {"steps": 0, "failed": []})
                mine["steps"] += 1
    if "assertions" in streams:
        async for _, _, record in numbered(view, "assertions"):
            if not isinstance(record, dict) or record.get("instance_id") not in wanted:
                continue
            mine = found.setdefault(record["instance_id"], {"steps": 0, "failed": []})
            if record.get("passed") is False and len(mine["failed"]) < MAX_FAILED_NAMES:
                step = record.get("step_name")
                name = str(record.get("name", "?"))
                mine["failed"].append(f"{step}.{name}" if isinstance(step, str) else name)
    return found


async def _failed_neighbours(view: AsyncRunView, instance_id: str) -> tuple[str | None, str | None]:
    """The failed (or errored) instances before and after ``instance_id``, in the run's order.

    An instance's outcome is its last record's; order is first appearance. An
    instance not in ``instances.jsonl`` has no previous one, and its next is the first.
    """
    outcomes: dict[str, str | None] = {}
    async for _, _, record in numbered(view, "instances"):
        if isinstance(record, dict) and isinstance(record.get("instance_id"), str):
            outcomes[record["instance_id"]] = outcome_of(record)
    order = list(outcomes)
    here = order.index(instance_id) if instance_id in outcomes else -1
    failing = [i for i, name in enumerate(order) if outcomes[name] in FAILING]
    before = [i for i in failing if i < here]
    after = [i for i in failing if i > here]
    return (
        order[before[-1]] if before else None,
        order[after[0]] if after else None,
    )


@dataclass
class Shown:
    """One artifact as the page shows it: pretty JSON, text, or a link only."""

    ref: ArtifactRef
    kind: str  # "json", "text", "binary", "large"
    body: str = ""


async def _show_artifact(view: AsyncRunView, ref: ArtifactRef, room: int = INLINE_LIMIT) -> Shown:
    """``ref`` in the page if it is within ``room`` and :data:`INLINE_LIMIT`, else a link."""
    if ref.size > min(room, INLINE_LIMIT):
        return Shown(ref, "large")
    data = await view.read_artifact(ref.name)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return Shown(ref, "binary")
    if ref.media_type == "application/json" or ref.name.endswith(".json"):
        try:
            body = pretty(json.loads(text))
        except (ValueError, RecursionError):
            body = ""
        if body and len(body) <= 2 * INLINE_LIMIT:
            return Shown(ref, "json", body)
    return Shown(ref, "text", text)


def _steps(steps: list[Entry], assertions: list[Entry]) -> tuple[list[dict[str, Any]], list[Entry]]:
    """Each step with its assertions (by ``step_index``, else ``step_name``); the others."""
    out: list[dict[str, Any]] = []
    claimed: set[int] = set()
    for index, step in enumerate(steps, start=1):
        number = step.record.get("step_index", index)
        mine = [
            (i, a)
            for i, a in enumerate(assertions)
            if i not in claimed
            and (
                a.record.get("step_index") == number
                if "step_index" in a.record
                else a.record.get("step_name") == step.record.get("step_name")
            )
        ]
        claimed.update(i for i, _ in mine)
        out.append({"entry": step, "number": number, "assertions": [a for _, a in mine]})
    return out, [a for i, a in enumerate(assertions) if i not in claimed]


async def _stored_lines(view: AsyncRunView, stream: str) -> AsyncIterator[bytes]:
    """The complete lines of ``stream`` as stored, in chunks of about :data:`RAW_CHUNK`."""
    chunk = bytearray()
    async for line in view.read_lines(stream):
        chunk += line
        chunk += b"\n"
        if len(chunk) >= RAW_CHUNK:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)


# -- the application -----------------------------------------------------------------


class Viewer:
    """The routes, sharing one async store opened for the application's lifetime."""

    def __init__(self, store_url: str, stale_after: timedelta = STALE_AFTER) -> None:
        self.store_url = store_url
        self.stale_after = stale_after
        self._store: AsyncStore | None = None
        self.env = _environment()
        self.comparer = Comparer(store_url)

    @property
    def store(self) -> AsyncStore:
        if self._store is None:  # pragma: no cover - the lifespan opens it first
            raise RuntimeError("the viewer's store is not open")
        return self._store

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._store = open_async(self.store_url)
        try:
            yield
        finally:
            store, self._store = self._store, None
            await store.aclose()
            await asyncio.to_thread(self.comparer.close)

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        page = self.env.get_template(template).render(
            request=request, store_url=self.store_url, **context
        )
        return HTMLResponse(page, status_code=status)

    async def error(self, request: Request, exc: Exception) -> Response:
        if self._store is not None:  # a run that cannot be read: say where and why
            exc = as_damaged_run(self._store, request.path_params.get("run_id"), exc)
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        elif isinstance(exc, NotFoundError):
            status, message = 404, exc.message
        elif isinstance(exc, InvalidInputError):
            status, message = 400, exc.message
        elif isinstance(exc, RunstoreError):
            status, message = 500, exc.message
        else:  # a bug: say so without a traceback in the page (the server logs it)
            status, message = 500, f"{type(exc).__name__}: {exc}"
        return self.render(request, "error.html", status=status, code=status, message=message)

    # -- pages ------------------------------------------------------------------

    def liveness(self, view: AsyncRunView) -> dict[str, Any]:
        """Whether ``view``'s run is live (its page refreshes) or lost its writer (stale)."""
        beat = view.state.heartbeat_at or view.state.updated_at
        age = utcnow() - beat
        stale = not view.state.is_terminal and age > self.stale_after
        return {
            "live": not view.state.is_terminal and not stale,
            "stale": stale,
            "beat": beat,
            "beat_age": fmt_duration(int(age.total_seconds() * 1000)),
        }

    async def _choices(self) -> dict[str, Any]:
        """What the filter form offers: every system under test, tag and metadata key."""
        everything = await self.store.list_runs()
        return {
            "total_runs": len(everything),
            "suts": sorted({r.sut_name for r in everything if r.sut_name}),
            "tags": sorted({t for r in everything for t in r.tags}),
            "metadata_keys": sorted({k for r in everything for k in r.metadata}),
        }

    async def _matching(
        self, chosen: RunFilter, keys: Sequence[str], **page: Any
    ) -> tuple[Sequence[RunRecord], str | None]:
        """The runs ``chosen`` selects, or none and the message of a malformed ``where``."""
        try:
            where = chosen.list_where(keys)
        except InvalidInputError as exc:
            return [], exc.message
        try:
            records: Sequence[RunRecord] = await self.store.list_runs(
                status=list(chosen.statuses) or None,  # type: ignore[arg-type]  # RunQuery refuses unknown ones
                sut_name=chosen.sut or None,
                tags=[chosen.tag] if chosen.tag else None,
                where=where,
                **page,
            )
        except InvalidInputError as exc:  # too long once the search is added, say
            if where is None:
                raise
            return [], exc.message
        return records, None

    async def runs(self, request: Request) -> Response:
        params = request.query_params
        chosen = RunFilter.from_params(params)
        limit = _int(params, "limit", PAGE_SIZE, 1, 500)
        offset = _int(params, "offset", 0, 0, 10**9)
        choices = await self._choices()
        records, problem = await self._matching(
            chosen, choices["metadata_keys"], limit=limit + 1, offset=offset
        )
        more, records = len(records) > limit, records[:limit]
        passed = sum(r.pass_count or 0 for r in records)
        failed = sum(r.fail_count or 0 for r in records)
        unfinished = [r for r in records if r.status not in TERMINAL_STATUSES]
        recent = [r for r in unfinished if utcnow() - r.updated_at <= self.stale_after]
        paused = params.get("live") == "0"
        return self.render(
            request,
            "runs.html",
            status=400 if problem else 200,
            records=records,
            statuses=sorted(TERMINAL_STATUSES | {"created", "running"}),
            chosen=chosen,
            problem=problem,
            offset=offset,
            limit=limit,
            more=more,
            overall=Tally("shown", Counter(passed=passed, failed=failed)),
            query=chosen.query(),
            live=bool(recent) and not paused,
            paused=paused and bool(recent),
            refresh=REFRESH_SECONDS if recent and not paused else 0,
            **choices,
        )

    async def chart(self, request: Request) -> Response:
        """Pass rate, duration and a chosen metric across the runs a filter selects."""
        params = request.query_params
        chosen = RunFilter.from_params(params, keep=("metric",))
        limit = _int(params, "limit", CHART_RUNS, 2, 500)
        choices = await self._choices()
        records, problem = await self._matching(chosen, choices["metadata_keys"], limit=limit)
        ordered = sorted(records, key=lambda r: (r.created_at, r.run_id))  # oldest first
        metrics = sorted({name for r in ordered for name in r.metrics})
        metric = params.get("metric") or (metrics[0] if metrics else "")
        charts = []
        if ordered:
            rates = [Point(r.run_id, r.created_at, r.pass_rate) for r in ordered]
            charts.append(
                ("pass rate", trend_svg(rates, title="pass rate", fmt=_pass_rate, top=1.0))
            )
            durations = [
                Point(r.run_id, r.created_at, None if r.duration_ms is None else r.duration_ms)
                for r in ordered
            ]
            charts.append(
                (
                    "duration",
                    trend_svg(
                        durations, title="duration", fmt=lambda v: fmt_duration(int(v)), css="alt"
                    ),
                )
            )
            if metric:
                values = [Point(r.run_id, r.created_at, r.metrics.get(metric)) for r in ordered]
                charts.append(
                    (
                        f"metric {metric}",
                        trend_svg(values, title=metric, fmt=_number, css="metric"),
                    )
                )
        return self.render(
            request,
            "chart.html",
            status=400 if problem else 200,
            chosen=chosen,
            problem=problem,
            records=ordered,
            charts=charts,
            metrics=metrics,
            metric=metric,
            limit=limit,
            statuses=sorted(TERMINAL_STATUSES | {"created", "running"}),
            **choices,
        )

    async def compare(self, request: Request) -> Response:
        """Two runs instance by instance: ``?a=RUN&b=RUN`` (or ``run`` twice, oldest first)."""
        params = request.query_params
        picked = [r for r in params.getlist("run") if r]
        a, b = params.get("a") or "", params.get("b") or ""
        if not (a or b) and len(picked) == 2:
            views = sorted(
                [await self.store.get_run(r) for r in picked],
                key=lambda v: (v.manifest.timestamp, v.run_id),
            )
            a, b = views[0].run_id, views[1].run_id
        if not (a and b):
            raise InvalidInputError(
                "choose two runs to compare: tick two runs on the runs page, or give "
                f"?a=RUN&b=RUN (got {len(picked) or int(bool(a)) + int(bool(b))})"
            )
        view_a, view_b = await self.store.get_run(a), await self.store.get_run(b)
        steps = params.get("steps") == "1"
        result = await asyncio.to_thread(
            self.comparer.compare, view_a.run_id, view_b.run_id, steps=steps
        )
        sections = [
            (name, getattr(result, name))
            for name in ("regressions", "fixes", "changed", "new", "missing")
        ]
        return self.render(
            request,
            "compare.html",
            view_a=view_a,
            view_b=view_b,
            result=result,
            sections=sections,
            shown=CHANGES_SHOWN,
            steps=steps,
            differing=[name for name, same in result.streams.items() if not same],
        )

    async def run(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        params = request.query_params
        show = params.get("instances") or "all"
        if show not in ("all", "passed", "failed"):
            raise InvalidInputError(f"instances must be all, passed or failed, not {show!r}")
        level = params.get("level") or None
        find = _search_text(params, "find")
        grep = _search_text(params, "grep")
        streams = await view.streams()
        overall = Tally("all instances")
        by_scenario: dict[str, Tally] = {}
        page = Page(_int(params, "offset", 0, 0, 10**9), PAGE_SIZE, PAGE_BYTES // 2)
        instance_ids: set[str] = set()
        first_failed: str | None = None
        if "instances" in streams:
            async for number, _, record in numbered(view, "instances"):
                if not isinstance(record, dict):
                    continue
                status = str(outcome_of(record) or "unknown")[:LABEL_CHARS]
                overall.counts[status] += 1
                scenario = record.get("scenario_id")
                if isinstance(scenario, str):
                    label = scenario[:LABEL_CHARS]
                    if label not in by_scenario and len(by_scenario) >= SCENARIOS:
                        label = "(other scenarios)"
                    by_scenario.setdefault(label, Tally(label)).counts[status] += 1
                instance_id = record.get("instance_id")
                if isinstance(instance_id, str) and len(instance_id) <= MAX_COMPONENT_BYTES:
                    instance_ids.add(instance_id)
                    if first_failed is None and status in FAILING:
                        first_failed = instance_id
                found = not find or (
                    isinstance(instance_id, str) and find.lower() in instance_id.lower()
                )
                if found and show in ("all", status):
                    page.offer(number, record)
        tallies = [overall, *(by_scenario[k] for k in sorted(by_scenario))]
        refs = await view.artifacts() if ARTIFACTS_STREAM in streams else []
        run_artifacts = [r for r in refs if r.name.split("/", 1)[0] not in instance_ids]
        logs = Tail(LOG_LINES, PAGE_BYTES // 2)
        if "logs" in streams:
            async for number, size, record in numbered(view, "logs"):
                if _at_level(record, level) and _mentions(record, grep):
                    logs.offer(number, size, record)
        derived = await _derived_columns(
            view, streams, [e.record for e in page.entries if isinstance(e.record, dict)]
        )
        summary = view.summary
        counts = summary.stream_counts if summary is not None else {}
        state_data = None if view.state.data is None else pretty(view.state.data)
        return self.render(
            request,
            "run.html",
            view=view,
            manifest=view.manifest,
            state=view.state,
            summary=summary,
            **self.liveness(view),
            find=find,
            grep=grep,
            first_failed=first_failed,
            derived=derived,
            chart=chart_svg(tallies) if overall.total else None,
            overall=overall,
            errors=summary.error_count if summary else overall.counts["error"],
            skipped=summary.skip_count if summary else overall.counts["skipped"],
            state_data=None if state_data is None else state_data[:INLINE_LIMIT],
            state_data_cut=state_data is not None and len(state_data) > INLINE_LIMIT,
            instances=page,
            show=show,
            page_size=PAGE_SIZE,
            streams=[(s, counts.get(s)) for s in streams if s != ARTIFACTS_STREAM],
            artifact_count=len(refs),
            run_artifacts=run_artifacts[:RUN_ARTIFACTS],
            more_artifacts=max(len(run_artifacts) - RUN_ARTIFACTS, 0),
            logs=logs.entries(),
            earlier_logs=logs.earlier,
            level=level or "",
            torn=view.torn_tails.get("logs", 0),
        )

    async def instance(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        instance_id = request.path_params["instance_id"]
        streams = await view.streams()
        refs = await view.artifacts() if ARTIFACTS_STREAM in streams else []
        records = await instance_records(
            view,
            instance_id,
            [s for s in streams if s != ARTIFACTS_STREAM],
            {ref.name for ref in refs},
        )
        prefix = f"{instance_id}/"
        artifacts = [r for r in refs if r.name.startswith(prefix) or r.name in records.named]
        if not (records.found or artifacts):
            raise NotFoundError(
                f"instance {instance_id!r} not found in run {view.run_id!r}: no record has "
                f"instance_id {instance_id!r} and no artifact is named {prefix}...",
                details={"run_id": view.run_id, "instance_id": instance_id},
            )
        shown: dict[str, Shown] = {}
        room = PAGE_BYTES
        for ref in artifacts:
            shown[ref.name] = await _show_artifact(view, ref, room)
            room -= len(shown[ref.name].body)
        mine = records.streams
        steps, loose = _steps(mine.pop("steps", []), mine.pop("assertions", []))
        for step in steps:
            step["artifacts"] = [shown[n] for n in step["entry"].names if n in shown]
            step["failed"] = any(a.record.get("passed") is False for a in step["assertions"])
        attached = {a.ref.name for s in steps for a in s["artifacts"]}
        previous, following = (
            await _failed_neighbours(view, instance_id) if "instances" in streams else (None, None)
        )
        bars = step_bars(
            [
                (
                    f"{s['number']} · {s['entry'].record.get('step_name', '')}",
                    s["entry"].record,
                    s["failed"],
                )
                for s in steps
                if isinstance(s["entry"].record, dict)
            ]
        )
        liveness = self.liveness(view)
        return self.render(
            request,
            "instance.html",
            view=view,
            **liveness,
            refresh=REFRESH_SECONDS if liveness["live"] else 0,
            previous_failed=previous,
            next_failed=following,
            timeline=timeline_svg(bars),
            instance_id=instance_id,
            seed=view.manifest.seed,
            instance=records.instance,
            steps=steps,
            loose_assertions=loose,
            other_artifacts=[shown[r.name] for r in artifacts if r.name not in attached],
            logs=mine.pop("logs", []),
            streams=mine,
            hidden=records.hidden,
        )

    async def _stream_of(self, request: Request) -> tuple[AsyncRunView, str]:
        view = await self.store.get_run(request.path_params["run_id"])
        stream = validate_stream_name(request.path_params["stream"], allow_reserved=True)
        if stream not in await view.streams():
            raise NotFoundError(f"stream {stream!r} not found in run {view.run_id!r}")
        return view, stream

    async def stream(self, request: Request) -> Response:
        view, stream = await self._stream_of(request)
        params = request.query_params
        offset = _int(params, "offset", 0, 0, 10**9)
        level = params.get("level") or None
        page = Page(offset, LOG_LINES)
        async for number, _, record in numbered(view, stream):
            if _at_level(record, level):
                page.offer(number, record)
        liveness = self.liveness(view)
        return self.render(
            request,
            "stream.html",
            view=view,
            **liveness,
            refresh=REFRESH_SECONDS if liveness["live"] else 0,
            stream=stream,
            page=page,
            offset=offset,
            page_size=LOG_LINES,
            level=level or "",
            torn=view.torn_tails.get(stream, 0),
        )

    async def stream_raw(self, request: Request) -> Response:
        """The stream as stored (a download), or with ``?line=N`` its record on line N."""
        view, stream = await self._stream_of(request)
        line = _int(request.query_params, "line", 0, 0, 10**12)
        if not line:
            headers = {
                "content-disposition": content_disposition("attachment", f"{stream}.jsonl"),
                "content-security-policy": RAW_CSP,
            }
            return StreamingResponse(
                _stored_lines(view, stream), media_type="application/x-ndjson", headers=headers
            )
        number = 0
        lines = cast(AsyncGenerator[bytes, None], view.read_lines(stream))
        async with aclosing(lines):  # stop reading at the line
            async for data in lines:
                number += 1
                if number == line:
                    name = f"{stream}-{line}.json"
                    headers = {
                        "content-disposition": content_disposition("inline", name),
                        "content-security-policy": RAW_CSP,
                    }
                    return Response(data + b"\n", media_type="application/json", headers=headers)
        raise NotFoundError(f"{stream}.jsonl of run {view.run_id!r} has no line {line}")

    async def artifact(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        ref = await view.artifact(request.path_params["name"])
        return self.render(
            request,
            "artifact.html",
            view=view,
            shown=await _show_artifact(view, ref),
            owner=_owner(ref),
        )

    async def bundle(self, request: Request) -> Response:
        """An instance's replay bundle (``bundle.json``: its records and artifact list)."""
        view = await self.store.get_run(request.path_params["run_id"])
        instance_id = request.path_params["instance_id"]
        bundle = await view.instance(instance_id)
        name = f"{view.run_id}-{instance_id}-bundle.json"
        headers = {
            "content-disposition": content_disposition("attachment", name),
            "content-security-policy": RAW_CSP,
        }
        body = json.dumps(bundle.to_json(), indent=2, ensure_ascii=False, default=str)
        return Response(body.encode(), media_type="application/json", headers=headers)

    async def raw(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        ref = await view.artifact(request.path_params["name"])
        media = ref.media_type if ref.media_type in _SAFE_MEDIA else "application/octet-stream"
        disposition = "inline" if media in _SAFE_MEDIA else "attachment"
        headers = {
            "content-disposition": content_disposition(disposition, ref.name.rsplit("/", 1)[-1]),
            "content-length": str(ref.size),
            "content-security-policy": RAW_CSP,
        }
        return StreamingResponse(
            view.open_artifact(ref.name, verify=False), media_type=media, headers=headers
        )


def _owner(ref: ArtifactRef) -> str | None:
    """The instance an artifact belongs to: its ``metadata.instance_id``, else its first folder."""
    named = ref.metadata.get("instance_id") if ref.metadata else None
    if isinstance(named, str) and named:
        return named
    return ref.name.split("/", 1)[0] if "/" in ref.name else None


class _ViewerApp(Starlette):
    """Starlette with :class:`SecurityHeaders` outside everything, its error middleware too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_app(store_url: str, *, stale_after: timedelta = STALE_AFTER) -> Starlette:
    """The viewer for the store at ``store_url``: an ASGI application (serve on 127.0.0.1).

    :param stale_after: a run not finished whose heartbeat is older is shown as
        having lost its writer ("writer not seen since ..."), not as live.
    """
    viewer = Viewer(store_url, stale_after)
    routes = [
        Route("/", viewer.runs, name="runs"),
        Route("/chart", viewer.chart, name="chart"),
        Route("/compare", viewer.compare, name="compare"),
        Route("/runs/{run_id}", viewer.run, name="run"),
        Route("/runs/{run_id}/instances/{instance_id}", viewer.instance, name="instance"),
        Route("/runs/{run_id}/instances/{instance_id}/bundle.json", viewer.bundle, name="bundle"),
        Route("/runs/{run_id}/streams/{stream}", viewer.stream, name="stream"),
        Route("/runs/{run_id}/streams/{stream}/raw", viewer.stream_raw, name="stream_raw"),
        Route("/runs/{run_id}/artifacts/{name:path}", viewer.artifact, name="artifact"),
        Route("/runs/{run_id}/raw/{name:path}", viewer.raw, name="raw"),
        Mount("/static", StaticFiles(packages=[("runstore.viewer", "static")]), name="static"),
    ]
    handlers: dict[Any, Any] = {
        RunstoreError: viewer.error,
        HTTPException: viewer.error,
        Exception: viewer.error,  # the 500 page of a bug (Starlette re-raises it for the log)
    }
    return _ViewerApp(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])],
        exception_handlers=handlers,
        lifespan=viewer.lifespan,
    )
