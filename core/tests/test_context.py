"""Correlation context: ``run.instance()`` / ``run.step()`` scopes add ids to what is appended."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel

import runstore
import runstore.context
from runstore.context import Correlation

_names = itertools.count()


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(f"memory://context-{os.getpid()}-{next(_names)}") as store:
        yield store


def _read(store: runstore.Store, run_id: str, stream: str) -> list[dict[str, Any]]:
    return list(store.get_run(run_id).read(stream))


# -- sync scopes -----------------------------------------------------------------------


def test_records_outside_every_scope_are_stored_exactly_as_given(store: runstore.Store) -> None:
    with store.create_run(run_id="run_plain") as run:
        run.append("steps", {"step_name": "login"})
    assert _read(store, "run_plain", "steps") == [{"step_name": "login"}]


def test_instance_and_step_scopes_add_their_ids(store: runstore.Store) -> None:
    with store.create_run(run_id="run_scoped") as run:
        with run.instance("inst_001"):
            run.append("instances", {"status": "passed"})
            with run.step("login"):
                run.append("steps", {"step_name": "login"})
                run.append("assertions", {"name": "ok", "passed": True})
            run.append("steps", {"step_name": "after"})
        run.append("steps", {"step_name": "outside"})
    assert _read(store, "run_scoped", "instances") == [
        {"status": "passed", "instance_id": "inst_001"}
    ]
    assert _read(store, "run_scoped", "steps") == [
        {"step_name": "login", "instance_id": "inst_001", "step_id": "login"},
        {"step_name": "after", "instance_id": "inst_001"},
        {"step_name": "outside"},
    ]
    assert _read(store, "run_scoped", "assertions") == [
        {"name": "ok", "passed": True, "instance_id": "inst_001", "step_id": "login"}
    ]


def test_instance_ids_make_the_summary_count_the_instance(store: runstore.Store) -> None:
    with store.create_run(run_id="run_count") as run, run.instance("inst_001"):
        run.append("instances", {"status": "failed"})
    assert run.summary is not None
    assert (run.summary.instance_count, run.summary.fail_count) == (1, 1)


def test_keys_the_record_has_are_never_replaced(store: runstore.Store) -> None:
    with store.create_run(run_id="run_keep") as run, run.instance("inst_001"), run.step("a"):
        run.append("steps", {"instance_id": "inst_999", "step_id": None, "n": 1})
    assert _read(store, "run_keep", "steps") == [
        {"instance_id": "inst_999", "step_id": None, "n": 1}
    ]


def test_the_callers_dict_is_not_modified(store: runstore.Store) -> None:
    record = {"n": 1}
    with store.create_run(run_id="run_copy") as run, run.instance("inst_001"):
        run.append("steps", record)
    assert record == {"n": 1}


def test_run_log_lines_get_the_ids(store: runstore.Store) -> None:
    with store.create_run(run_id="run_log") as run, run.instance("inst_001"), run.step("pay"):
        run.log("info", "paid")
    [line] = _read(store, "run_log", "logs")
    assert (line["message"], line["instance_id"], line["step_id"]) == ("paid", "inst_001", "pay")


class Step(BaseModel):
    step_name: str
    instance_id: str | None = None
    step_id: str | None = None


def test_model_records_get_ids_only_for_fields_they_were_not_given(store: runstore.Store) -> None:
    with store.create_run(run_id="run_model") as run, run.instance("inst_001"), run.step("s"):
        run.append("steps", Step(step_name="a"))
        run.append("steps", Step(step_name="b", instance_id="inst_002", step_id=None))
    assert _read(store, "run_model", "steps") == [
        {"step_name": "a", "instance_id": "inst_001", "step_id": "s"},
        {"step_name": "b", "instance_id": "inst_002", "step_id": None},
    ]


def test_a_step_keeps_the_instance_and_a_new_instance_drops_the_step(
    store: runstore.Store,
) -> None:
    with store.create_run(run_id="run_nest") as run, run.instance("inst_001"):
        with run.step("login"):
            assert runstore.context.current() == Correlation(
                run_id="run_nest", instance_id="inst_001", step_id="login"
            )
            with run.instance("inst_002"):
                assert runstore.context.current() == Correlation(
                    run_id="run_nest", instance_id="inst_002"
                )
            assert runstore.context.current() == Correlation(
                run_id="run_nest", instance_id="inst_001", step_id="login"
            )
        assert runstore.context.current() == Correlation(run_id="run_nest", instance_id="inst_001")
    assert runstore.context.current() is None


def test_scope_is_restored_when_the_block_raises(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_raise")
    with pytest.raises(ValueError, match="boom"), run.instance("inst_001"):
        raise ValueError("boom")
    assert runstore.context.current() is None
    run.finish()


def test_entering_a_scope_returns_the_correlation_in_effect(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_enter")
    with run.instance("inst_001", trace_id="t-1") as correlation:
        assert correlation == Correlation(
            run_id="run_enter", instance_id="inst_001", trace_id="t-1"
        )
    run.finish()


def test_a_scope_of_one_run_adds_nothing_to_another_run(store: runstore.Store) -> None:
    first = store.create_run(run_id="run_first")
    second = store.create_run(run_id="run_second")
    with first.instance("inst_001"):
        first.append("steps", {"n": 1})
        second.append("steps", {"n": 2})
    first.finish()
    second.finish()
    assert _read(store, "run_first", "steps") == [{"n": 1, "instance_id": "inst_001"}]
    assert _read(store, "run_second", "steps") == [{"n": 2}]


def test_entering_another_runs_instance_drops_the_outer_step_but_keeps_the_trace(
    store: runstore.Store,
) -> None:
    first = store.create_run(run_id="run_a")
    second = store.create_run(run_id="run_b")
    with first.instance("inst_001", trace_id="t-1"), first.step("s"), second.instance("x"):
        assert runstore.context.current() == Correlation(
            run_id="run_b", instance_id="x", trace_id="t-1"
        )
    first.finish()
    second.finish()


# -- bind, trace ids and current_fields ---------------------------------------------


def test_bind_without_a_run_applies_to_any_run_and_keeps_outer_ids(store: runstore.Store) -> None:
    with store.create_run(run_id="run_bind") as run, run.instance("inst_001"):
        with runstore.context.bind(trace_id="req-42"):
            run.append("steps", {"n": 1})
            assert runstore.context.current_fields() == {
                "run_id": "run_bind",
                "instance_id": "inst_001",
                "trace_id": "req-42",
            }
        run.append("steps", {"n": 2})
    assert _read(store, "run_bind", "steps") == [
        {"n": 1, "instance_id": "inst_001", "trace_id": "req-42"},
        {"n": 2, "instance_id": "inst_001"},
    ]


def test_bind_alone_correlates_records_of_any_run(store: runstore.Store) -> None:
    with store.create_run(run_id="run_any") as run, runstore.context.bind(instance_id="i9"):
        run.append("steps", {"n": 1})
    assert _read(store, "run_any", "steps") == [{"n": 1, "instance_id": "i9"}]


def test_current_fields_is_empty_outside_every_scope() -> None:
    assert runstore.context.current_fields() == {}


def test_a_trace_id_given_to_an_instance_is_inherited_by_its_steps(store: runstore.Store) -> None:
    with (
        store.create_run(run_id="run_trace") as run,
        run.instance("inst_001", trace_id="abc"),
        run.step("s"),
    ):
        run.append("steps", {"n": 1})
    assert _read(store, "run_trace", "steps") == [
        {"n": 1, "instance_id": "inst_001", "step_id": "s", "trace_id": "abc"}
    ]


class _SpanContext:
    def __init__(self, trace_id: int, valid: bool) -> None:
        self.trace_id = trace_id
        self.is_valid = valid


class _Span:
    def __init__(self, trace_id: int, valid: bool = True) -> None:
        self._context = _SpanContext(trace_id, valid)

    def get_span_context(self) -> _SpanContext:
        return self._context


def _fake_opentelemetry(monkeypatch: pytest.MonkeyPatch, span: _Span) -> None:
    """A stand-in for ``opentelemetry.trace`` with one current span."""
    trace = types.ModuleType("opentelemetry.trace")
    trace.get_current_span = lambda: span  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)


def test_opentelemetry_trace_id_is_used_when_the_scope_has_none(
    store: runstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_opentelemetry(monkeypatch, _Span(0x0AF7651916CD43DD8448EB211C80319C))
    with store.create_run(run_id="run_otel") as run:
        with run.instance("inst_001"):
            run.append("steps", {"n": 1})
        with run.instance("inst_002", trace_id="mine"):
            run.append("steps", {"n": 2})
        run.append("steps", {"n": 3})  # no scope: OpenTelemetry alone adds nothing
    assert _read(store, "run_otel", "steps") == [
        {"n": 1, "instance_id": "inst_001", "trace_id": "0af7651916cd43dd8448eb211c80319c"},
        {"n": 2, "instance_id": "inst_002", "trace_id": "mine"},
        {"n": 3},
    ]


def test_an_invalid_opentelemetry_span_adds_no_trace_id(
    store: runstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_opentelemetry(monkeypatch, _Span(0, valid=False))
    with store.create_run(run_id="run_nospan") as run, run.instance("inst_001"):
        run.append("steps", {"n": 1})
    assert _read(store, "run_nospan", "steps") == [{"n": 1, "instance_id": "inst_001"}]


def test_a_broken_tracer_never_breaks_an_append(
    store: runstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = types.ModuleType("opentelemetry.trace")

    def broken() -> Any:
        raise RuntimeError("tracer down")

    trace.get_current_span = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)
    with store.create_run(run_id="run_broken") as run, run.instance("inst_001"):
        run.append("steps", {"n": 1})
    assert _read(store, "run_broken", "steps") == [{"n": 1, "instance_id": "inst_001"}]


# -- threads ---------------------------------------------------------------------------


def test_a_thread_gets_the_scope_when_given_a_copy_of_the_context(store: runstore.Store) -> None:
    with (
        store.create_run(run_id="run_thread") as run,
        run.instance("inst_001"),
        ThreadPoolExecutor(1) as pool,
    ):
        ctx = contextvars.copy_context()
        pool.submit(ctx.run, run.append, "steps", {"n": 1}).result()
        pool.submit(run.append, "steps", {"n": 2}).result()  # a bare thread: no scope
    assert _read(store, "run_thread", "steps") == [{"n": 1, "instance_id": "inst_001"}, {"n": 2}]


# -- async -----------------------------------------------------------------------------


def _async(scenario: Any) -> None:
    async def main() -> None:
        url = f"memory://context-aio-{os.getpid()}-{next(_names)}"
        async with runstore.aio.open(url) as store:
            await scenario(store)

    asyncio.run(main())


def test_async_with_scopes_correlate_async_appends() -> None:
    async def scenario(store: runstore.aio.AsyncStore) -> None:
        run = await store.create_run(run_id="run_async")
        async with run:
            async with run.instance("inst_001"), run.step("login"):
                await run.append("steps", {"n": 1})
            with run.instance("inst_002"):  # a plain with works on AsyncRun too
                await run.log("info", "hi")
        view = await store.get_run("run_async")
        assert [r async for r in view.read("steps")] == [
            {"n": 1, "instance_id": "inst_001", "step_id": "login"}
        ]
        [line] = [r async for r in view.read("logs")]
        assert line["instance_id"] == "inst_002"

    _async(scenario)


def test_concurrent_tasks_each_keep_their_own_instance() -> None:
    async def scenario(store: runstore.aio.AsyncStore) -> None:
        run = await store.create_run(run_id="run_tasks")

        async def instance(number: int) -> None:
            async with run.instance(f"inst_{number:03d}"):
                for step in range(5):
                    async with run.step(f"s{step}"):
                        await asyncio.sleep(0)  # let the other tasks interleave
                        await run.append("steps", {"n": number, "step": step})

        async with run:
            await asyncio.gather(*(instance(n) for n in range(20)))
        view = await store.get_run("run_tasks")
        records = [r async for r in view.read("steps")]
        assert len(records) == 100
        for record in records:
            assert record["instance_id"] == f"inst_{record['n']:03d}"
            assert record["step_id"] == f"s{record['step']}"

    _async(scenario)


def test_tasks_created_inside_a_scope_inherit_it() -> None:
    async def scenario(store: runstore.aio.AsyncStore) -> None:
        run = await store.create_run(run_id="run_child")
        async with run:
            async with run.instance("inst_001"):
                task = asyncio.create_task(run.append("steps", {"n": 1}))
            await task  # awaited after the scope closed: the task copied it when created
        view = await store.get_run("run_child")
        assert [r async for r in view.read("steps")] == [{"n": 1, "instance_id": "inst_001"}]

    _async(scenario)
