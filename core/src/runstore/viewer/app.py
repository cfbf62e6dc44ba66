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

import json
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, cast
from urllib.parse import quote, urlencode

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
from runstore.cli.format import fmt_bytes, fmt_duration, fmt_time
from runstore.engine.store import DEFAULT_HEARTBEAT_SECONDS
from runstore.model.errors import InvalidInputError, NotFoundError, RunstoreError
from runstore.model.names import MAX_COMPONENT_BYTES, validate_stream_name
from runstore.model.run import TERMINAL_STATUSES, ArtifactRef, RunRecord, utcnow
from runstore.spi.layout import ARTIFACTS_STREAM
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


# -- formatting helpers (template filters) -----------------------------------------


def _pass_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


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

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        page = self.env.get_template(template).render(
            request=request, store_url=self.store_url, **context
        )
        return HTMLResponse(page, status_code=status)

    async def error(self, request: Request, exc: Exception) -> Response:
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

    async def runs(self, request: Request) -> Response:
        params = request.query_params
        statuses = [s for s in params.getlist("status") if s]
        sut = params.get("sut") or None
        tag = params.get("tag") or None
        limit = _int(params, "limit", PAGE_SIZE, 1, 500)
        offset = _int(params, "offset", 0, 0, 10**9)
        records: Sequence[RunRecord] = await self.store.list_runs(
            status=statuses or None,  # type: ignore[arg-type]  # RunQuery refuses unknown ones
            sut_name=sut,
            tags=[tag] if tag else None,
            limit=limit + 1,
            offset=offset,
        )
        more, records = len(records) > limit, records[:limit]
        everything = await self.store.list_runs()
        passed = sum(r.pass_count or 0 for r in records)
        failed = sum(r.fail_count or 0 for r in records)
        return self.render(
            request,
            "runs.html",
            records=records,
            statuses=sorted(TERMINAL_STATUSES | {"created", "running"}),
            chosen=set(statuses),
            sut=sut or "",
            tag=tag or "",
            suts=sorted({r.sut_name for r in everything if r.sut_name}),
            tags=sorted({t for r in everything for t in r.tags}),
            offset=offset,
            limit=limit,
            more=more,
            total_runs=len(everything),
            overall=Tally("shown", Counter(passed=passed, failed=failed)),
            query=_query_without(params, "offset"),
        )

    async def run(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        params = request.query_params
        show = params.get("instances") or "all"
        if show not in ("all", "passed", "failed"):
            raise InvalidInputError(f"instances must be all, passed or failed, not {show!r}")
        level = params.get("level") or None
        streams = await view.streams()
        overall = Tally("all instances")
        by_scenario: dict[str, Tally] = {}
        page = Page(_int(params, "offset", 0, 0, 10**9), PAGE_SIZE, PAGE_BYTES // 2)
        instance_ids: set[str] = set()
        if "instances" in streams:
            async for number, _, record in numbered(view, "instances"):
                if not isinstance(record, dict):
                    continue
                status = str(record.get("status", "unknown"))[:LABEL_CHARS]
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
                if show in ("all", status):
                    page.offer(number, record)
        tallies = [overall, *(by_scenario[k] for k in sorted(by_scenario))]
        refs = await view.artifacts() if ARTIFACTS_STREAM in streams else []
        run_artifacts = [r for r in refs if r.name.split("/", 1)[0] not in instance_ids]
        logs = Tail(LOG_LINES, PAGE_BYTES // 2)
        if "logs" in streams:
            async for number, size, record in numbered(view, "logs"):
                if _at_level(record, level):
                    logs.offer(number, size, record)
        summary = view.summary
        counts = summary.stream_counts if summary is not None else {}
        state_data = None if view.state.data is None else pretty(view.state.data)
        beat = view.state.heartbeat_at or view.state.updated_at
        age = utcnow() - beat
        stale = not view.state.is_terminal and age > self.stale_after
        return self.render(
            request,
            "run.html",
            view=view,
            manifest=view.manifest,
            state=view.state,
            summary=summary,
            live=not view.state.is_terminal and not stale,
            stale=stale,
            beat=beat,
            beat_age=fmt_duration(int(age.total_seconds() * 1000)),
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
        attached = {a.ref.name for s in steps for a in s["artifacts"]}
        return self.render(
            request,
            "instance.html",
            view=view,
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
        return self.render(
            request,
            "stream.html",
            view=view,
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
            request, "artifact.html", view=view, shown=await _show_artifact(view, ref)
        )

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


def _query_without(params: Mapping[str, str], *names: str) -> str:
    items = getattr(params, "multi_items", lambda: list(params.items()))()
    return urlencode([(k, v) for k, v in items if k not in names and v])


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
        Route("/runs/{run_id}", viewer.run, name="run"),
        Route("/runs/{run_id}/instances/{instance_id}", viewer.instance, name="instance"),
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
