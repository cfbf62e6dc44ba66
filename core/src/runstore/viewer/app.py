"""The viewer's web application: server-rendered pages over the async API.

Starlette routes, Jinja2 templates shipped in the package (``templates/``,
``static/``), no JavaScript and nothing fetched from elsewhere. Every route
is ``GET`` (and ``HEAD``): no request can change the store. Run ids, stream
and artifact names from the URL go through the same validation as the API
(:mod:`runstore.model.names`), so a hostile name is a 400, never a path outside
the store. Only ``Host: 127.0.0.1`` / ``localhost`` is served (no DNS
rebinding), and artifacts are served as downloads or inert text, sandboxed.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runstore import __version__
from runstore.aio import AsyncRunView, AsyncStore
from runstore.aio import open as open_async
from runstore.cli.format import fmt_bytes, fmt_duration, fmt_time
from runstore.model.errors import InvalidInputError, NotFoundError, RunstoreError
from runstore.model.names import validate_stream_name
from runstore.model.run import TERMINAL_STATUSES, ArtifactRef, RunRecord
from runstore.spi.layout import ARTIFACTS_STREAM

__all__ = ["create_app"]

INLINE_LIMIT: Final = 256 * 1024
"""Artifacts up to this size are shown in the page; larger ones are a download link.
The caller's state (``state.data``) is shown up to this many characters."""
PAGE_SIZE: Final = 50
LOG_LINES: Final = 200
_SAFE_MEDIA: Final = frozenset({"application/json", "text/plain", "image/png", "image/jpeg"})
_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
]


class _SecurityHeaders:
    """Adds the headers above to every response (pages, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- formatting helpers (template filters) -----------------------------------------


def _pass_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


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
        pretty=_pretty,
        compact=_compact,
        q=_quote,
    )
    env.globals["version"] = __version__
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


async def _tail(view: AsyncRunView, stream: str, limit: int, level: str | None) -> list[Any]:
    last: deque[Any] = deque(maxlen=limit)
    async for record in view.read(stream):
        if level and (not isinstance(record, dict) or record.get("level") != level):
            continue
        last.append(record)
    return list(last)


@dataclass
class Shown:
    """One artifact as the page shows it: pretty JSON, text, or a link only."""

    ref: ArtifactRef
    kind: str  # "json", "text", "binary", "large"
    body: str = ""


async def _show_artifact(view: AsyncRunView, ref: ArtifactRef) -> Shown:
    if ref.size > INLINE_LIMIT:
        return Shown(ref, "large")
    data = await view.read_artifact(ref.name)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return Shown(ref, "binary")
    if ref.media_type == "application/json" or ref.name.endswith(".json"):
        try:
            return Shown(ref, "json", _pretty(json.loads(text)))
        except ValueError:
            pass
    return Shown(ref, "text", text)


def _artifact_names(record: Mapping[str, Any], refs: Mapping[str, ArtifactRef]) -> list[str]:
    """Artifacts a record names in its top-level values (``request_artifact``, ...)."""
    return [v for v in record.values() if isinstance(v, str) and v in refs]


# -- the application -----------------------------------------------------------------


class Viewer:
    """The routes, sharing one async store opened for the application's lifetime."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
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
        else:  # pragma: no cover - a bug: say so without a traceback in the page
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
        records: list[RunRecord] = await self.store.list_runs(
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
        offset = _int(params, "offset", 0, 0, 10**9)
        streams = await view.streams()
        overall = Tally("all instances")
        by_scenario: dict[str, Tally] = {}
        page: list[dict[str, Any]] = []
        matching = 0
        instance_ids: set[str] = set()
        if "instances" in streams:
            async for record in view.read("instances"):
                if not isinstance(record, dict):
                    continue
                status = str(record.get("status", "unknown"))
                overall.counts[status] += 1
                scenario = record.get("scenario_id")
                if isinstance(scenario, str):
                    by_scenario.setdefault(scenario, Tally(scenario)).counts[status] += 1
                if isinstance(record.get("instance_id"), str):
                    instance_ids.add(record["instance_id"])
                if show not in ("all", status):
                    continue
                if offset <= matching < offset + PAGE_SIZE:
                    page.append(record)
                matching += 1
        tallies = [overall, *(by_scenario[k] for k in sorted(by_scenario))]
        refs = await view.artifacts() if ARTIFACTS_STREAM in streams else []
        run_artifacts = [r for r in refs if r.name.split("/", 1)[0] not in instance_ids]
        logs = await _tail(view, "logs", LOG_LINES, level) if "logs" in streams else []
        summary = view.summary
        counts = summary.stream_counts if summary is not None else {}
        state_data = None if view.state.data is None else _pretty(view.state.data)
        return self.render(
            request,
            "run.html",
            view=view,
            manifest=view.manifest,
            state=view.state,
            summary=summary,
            live=not view.state.is_terminal,
            chart=chart_svg(tallies) if overall.total else None,
            overall=overall,
            errors=summary.error_count if summary else overall.counts["error"],
            skipped=summary.skip_count if summary else overall.counts["skipped"],
            state_data=None if state_data is None else state_data[:INLINE_LIMIT],
            state_data_cut=state_data is not None and len(state_data) > INLINE_LIMIT,
            instances=page,
            show=show,
            matching=matching,
            offset=offset,
            page_size=PAGE_SIZE,
            streams=[(s, counts.get(s)) for s in streams if s != ARTIFACTS_STREAM],
            artifact_count=len(refs),
            run_artifacts=run_artifacts,
            logs=logs,
            level=level or "",
            torn=view.torn_tails.get("logs", 0),
        )

    async def instance(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        bundle = await view.instance(request.path_params["instance_id"])
        refs = {ref.name: ref for ref in bundle.artifacts}
        shown: dict[str, Shown] = {}
        for ref in bundle.artifacts:
            shown[ref.name] = await _show_artifact(view, ref)
        steps = []
        claimed: set[int] = set()
        for index, step in enumerate(bundle.steps, start=1):
            number = step.get("step_index", index)
            mine = [
                (i, a)
                for i, a in enumerate(bundle.assertions)
                if i not in claimed
                and (
                    a.get("step_index") == number
                    if "step_index" in a
                    else a.get("step_name") == step.get("step_name")
                )
            ]
            claimed.update(i for i, _ in mine)
            names = _artifact_names(step, refs)
            steps.append(
                {
                    "record": step,
                    "number": number,
                    "assertions": [a for _, a in mine],
                    "artifacts": [shown[n] for n in names],
                }
            )
        attached = {a.ref.name for s in steps for a in s["artifacts"]}
        return self.render(
            request,
            "instance.html",
            view=view,
            bundle=bundle,
            instance=bundle.instance or {},
            steps=steps,
            loose_assertions=[a for i, a in enumerate(bundle.assertions) if i not in claimed],
            other_artifacts=[shown[r.name] for r in bundle.artifacts if r.name not in attached],
            logs=bundle.logs,
            streams=bundle.streams,
        )

    async def stream(self, request: Request) -> Response:
        view = await self.store.get_run(request.path_params["run_id"])
        stream = validate_stream_name(request.path_params["stream"], allow_reserved=True)
        if stream not in await view.streams():
            raise NotFoundError(f"stream {stream!r} not found in run {view.run_id!r}")
        params = request.query_params
        offset = _int(params, "offset", 0, 0, 10**9)
        level = params.get("level") or None
        records: list[tuple[int, Any]] = []
        matching = 0
        async for record in view.read(stream):
            if level and (not isinstance(record, dict) or record.get("level") != level):
                continue
            matching += 1
            if offset < matching <= offset + LOG_LINES:
                records.append((matching, record))
        return self.render(
            request,
            "stream.html",
            view=view,
            stream=stream,
            records=records,
            matching=matching,
            offset=offset,
            page_size=LOG_LINES,
            level=level or "",
            torn=view.torn_tails.get(stream, 0),
        )

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
        leaf = ref.name.rsplit("/", 1)[-1]
        disposition = "inline" if media in _SAFE_MEDIA else "attachment"
        headers = {
            "content-disposition": f'{disposition}; filename="{leaf}"',
            "content-length": str(ref.size),
            "content-security-policy": "sandbox; default-src 'none'",
        }
        return StreamingResponse(
            view.open_artifact(ref.name, verify=False), media_type=media, headers=headers
        )


def _query_without(params: Mapping[str, str], *names: str) -> str:
    items = getattr(params, "multi_items", lambda: list(params.items()))()
    return urlencode([(k, v) for k, v in items if k not in names and v])


def create_app(store_url: str) -> Starlette:
    """The viewer for the store at ``store_url``: an ASGI application (serve on 127.0.0.1)."""
    viewer = Viewer(store_url)
    routes = [
        Route("/", viewer.runs, name="runs"),
        Route("/runs/{run_id}", viewer.run, name="run"),
        Route("/runs/{run_id}/instances/{instance_id}", viewer.instance, name="instance"),
        Route("/runs/{run_id}/streams/{stream}", viewer.stream, name="stream"),
        Route("/runs/{run_id}/artifacts/{name:path}", viewer.artifact, name="artifact"),
        Route("/runs/{run_id}/raw/{name:path}", viewer.raw, name="raw"),
        Mount("/static", StaticFiles(packages=[("runstore.viewer", "static")]), name="static"),
    ]
    handlers: dict[Any, Any] = {
        RunstoreError: viewer.error,
        HTTPException: viewer.error,
    }
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
        ],
        exception_handlers=handlers,
        lifespan=viewer.lifespan,
    )
