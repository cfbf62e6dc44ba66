"""The demo main job: a simulated Windtunnel run of an e-commerce system under test.

``runstore demo`` (and ``make demo``) call :func:`run_demo`, and so can tests
and benchmarks::

    >>> import runstore
    >>> from runstore.cli.demo import run_demo
    >>> with runstore.open("memory://demo-doctest") as store:
    ...     summary = run_demo(store, seed=42, instances=5, run_id="run_demo")
    ...     (summary.instance_count, summary.pass_count + summary.fail_count)
    (5, 5)

Everything the run contains comes from ``random.Random(seed)`` and the fixed
catalogue below: two runs with the same seed and instance count produce the
same tree, record for record and byte for byte, except for timestamps and the
run id (which only the store's own bookkeeping mentions). No wall-clock time
and no random name ever goes into a record or an artifact. (A run longer than
the store's heartbeat interval also bumps ``state.json``'s revision once per
heartbeat.)

The simulated system has failures a real suite would find, all drawn from the
seeded generator: declined cards, a rounding bug in bulk-order totals, refunds
refused after the 30-day window and the occasional response over the latency
budget.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.render import print_commands, summary_panel
from runstore.model.errors import InvalidInputError
from runstore.model.run import RunSummary
from runstore.store import Run, Store

__all__ = ["DEFAULT_INSTANCES", "DEFAULT_SEED", "SCENARIOS", "SUT_NAME", "demo", "run_demo"]

SUT_NAME: Final = "ecommerce"
SCENARIOS: Final = ("checkout", "refund")
DEFAULT_SEED: Final = 42
DEFAULT_INSTANCES: Final = 100
LATENCY_BUDGET_MS: Final = 1000
REFUND_WINDOW_DAYS: Final = 30
_PHASE: Final = "simulate"
_PHASE_EVERY: Final = 10


class _Item(NamedTuple):
    sku: str
    name: str
    price_cents: int


_CATALOG: Final = (
    _Item("SKU-1001", "Espresso beans 1 kg", 2499),
    _Item("SKU-1002", "Pour-over kettle", 4999),
    _Item("SKU-1003", "Ceramic mug", 1299),
    _Item("SKU-1004", "Burr grinder", 12999),
    _Item("SKU-1005", "Paper filters x100", 599),
)

ProgressCallback = Callable[[int, int], None]
"""``progress(completed, total)``, called after each instance."""


def _json(data: Any) -> bytes:
    """Stable artifact bytes: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


@dataclass
class _Step:
    name: str
    method: str
    path: str
    body: dict[str, Any]
    status: int
    response: dict[str, Any]
    observation: dict[str, Any] = field(default_factory=dict)
    checks: list[tuple[str, bool, Any, Any]] = field(default_factory=list)
    """``(assertion name, passed, expected, actual)``."""


class _Simulator:
    """The simulated SUT and the harness driving it, fed by one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def latency(self) -> int:
        if self.rng.random() < 0.03:  # a slow dependency now and then
            return self.rng.randint(LATENCY_BUDGET_MS + 1, 2 * LATENCY_BUDGET_MS)
        return self.rng.randint(15, 240)

    def step(
        self,
        name: str,
        method: str,
        path: str,
        *,
        body: dict[str, Any],
        status: int,
        response: dict[str, Any],
    ) -> _Step:
        latency = self.latency()
        step = _Step(name, method, path, body, status, response)
        step.observation = {"http_status": status, "latency_ms": latency}
        step.checks.append(
            ("latency_within_budget", latency <= LATENCY_BUDGET_MS, LATENCY_BUDGET_MS, latency)
        )
        return step

    def login(self, user: str) -> _Step:
        token = f"tok_{self.rng.getrandbits(64):016x}"
        step = self.step(
            "login",
            "POST",
            "/api/login",
            body={"user": user},
            status=200,
            response={"token": token, "user": user},
        )
        step.checks.append(("http_ok", True, 200, 200))
        return step

    def checkout(self, user: str) -> list[_Step]:
        item = self.rng.choice(_CATALOG)
        qty = self.rng.randint(1, 4)
        expected_total = item.price_cents * qty
        # The SUT's bug: bulk orders (qty 4) of items over 50.00 lose a cent to rounding.
        charged = expected_total - 1 if qty == 4 and item.price_cents > 5000 else expected_total
        declined = self.rng.random() < 0.06
        order_id = f"ord_{self.rng.randint(10000, 99999)}"
        steps = [self.login(user)]
        cart = {"items": [{"sku": item.sku, "qty": qty}], "subtotal_cents": expected_total}
        add = self.step(
            "add_to_cart",
            "POST",
            "/api/cart/items",
            body={"sku": item.sku, "qty": qty},
            status=200,
            response={"cart": cart},
        )
        add.observation["cart_items"] = qty
        add.checks.append(("http_ok", True, 200, 200))
        steps.append(add)
        order = self.step(
            "checkout",
            "POST",
            "/api/checkout",
            body={"cart": cart},
            status=201,
            response={"order_id": order_id, "total_cents": charged},
        )
        order.observation["total_cents"] = charged
        order.checks.append(("http_ok", True, 201, 201))
        order.checks.append(
            ("total_matches_cart", charged == expected_total, expected_total, charged)
        )
        steps.append(order)
        status = 402 if declined else 200
        result = {"error": "card_declined"} if declined else {"payment": "captured"}
        pay = self.step(
            "confirm_payment",
            "POST",
            "/api/payments",
            body={"order_id": order_id, "amount_cents": charged},
            status=status,
            response=result,
        )
        pay.observation["payment"] = result.get("payment", result.get("error"))
        pay.checks.append(("http_ok", status < 400, 200, status))
        steps.append(pay)
        return steps

    def refund(self, user: str) -> list[_Step]:
        item = self.rng.choice(_CATALOG)
        age_days = self.rng.randint(0, 34)
        order_id = f"ord_{self.rng.randint(10000, 99999)}"
        steps = [self.login(user)]
        get = self.step(
            "get_order",
            "GET",
            f"/api/orders/{order_id}",
            body={},
            status=200,
            response={
                "order_id": order_id,
                "sku": item.sku,
                "total_cents": item.price_cents,
                "age_days": age_days,
            },
        )
        get.observation["age_days"] = age_days
        get.checks.append(("http_ok", True, 200, 200))
        steps.append(get)
        refused = age_days > REFUND_WINDOW_DAYS
        status = 409 if refused else 200
        result = (
            {"error": "refund_window_expired"}
            if refused
            else {"refund_cents": item.price_cents, "refund": "issued"}
        )
        refund = self.step(
            "request_refund",
            "POST",
            f"/api/orders/{order_id}/refund",
            body={"reason": self.rng.choice(["damaged", "wrong_item", "changed_mind"])},
            status=status,
            response=result,
        )
        refund.observation["refund_cents"] = result.get("refund_cents", 0)
        refund.checks.append(("http_ok", status < 400, 200, status))
        refund.checks.append(
            ("refund_issued", not refused, item.price_cents, result.get("refund_cents", 0))
        )
        steps.append(refund)
        return steps


def _run_instance(run: Run, sim: _Simulator, instance_id: str) -> dict[str, Any]:
    scenario = "checkout" if sim.rng.random() < 0.6 else "refund"
    user = f"user_{sim.rng.randint(1, 500):03d}"
    run.log("info", "instance started", instance_id=instance_id, scenario_id=scenario)
    steps = sim.checkout(user) if scenario == "checkout" else sim.refund(user)
    failed: list[str] = []
    elapsed = 0
    for index, step in enumerate(steps, start=1):
        prefix = f"{instance_id}/step_{index:03d}"
        request = {"method": step.method, "path": step.path, "body": step.body}
        response = {"status": step.status, "body": step.response}
        req = run.put_artifact(f"{prefix}_request.json", _json(request))
        resp = run.put_artifact(f"{prefix}_response.json", _json(response))
        elapsed += step.observation["latency_ms"]
        run.append(
            "steps",
            {
                "instance_id": instance_id,
                "scenario_id": scenario,
                "step_index": index,
                "step_name": step.name,
                "observation": step.observation,
                "elapsed_ms": elapsed,
                "request_artifact": req.name,
                "response_artifact": resp.name,
            },
        )
        for name, passed, expected, actual in step.checks:
            run.append(
                "assertions",
                {
                    "instance_id": instance_id,
                    "scenario_id": scenario,
                    "step_index": index,
                    "step_name": step.name,
                    "name": name,
                    "passed": passed,
                    "expected": expected,
                    "actual": actual,
                },
            )
            if not passed:
                failed.append(f"{step.name}.{name}")
                run.log(
                    "error",
                    f"assertion {name} failed at {step.name}: expected {expected}, got {actual}",
                    instance_id=instance_id,
                    step_index=index,
                )
    status = "failed" if failed else "passed"
    record = {
        "instance_id": instance_id,
        "scenario_id": scenario,
        "status": status,
        "user": user,
        "step_count": len(steps),
        "failed_assertions": failed,
        "sim_duration_ms": elapsed,
    }
    run.append("instances", record)
    run.log("info", f"instance {status}", instance_id=instance_id, scenario_id=scenario)
    return record


def run_demo(
    store: Store,
    *,
    seed: int = DEFAULT_SEED,
    instances: int = DEFAULT_INSTANCES,
    run_id: str | None = None,
    progress: ProgressCallback | None = None,
) -> RunSummary:
    """Simulate a Windtunnel run of the ``ecommerce`` SUT into ``store``.

    :param seed: seeds ``random.Random``; same seed and ``instances`` -> same run.
    :param instances: how many test instances (``inst_001``, ``inst_002``, ...).
    :param run_id: the run id; generated (``run_YYYYMMDD_NNN``) when ``None``.
    :param progress: called as ``progress(completed, total)`` after each instance.
    :returns: the run's summary (``summary.run_id`` names the run).
    """
    if instances < 0:
        raise InvalidInputError(
            f"instances must be 0 or more, got {instances}", details={"instances": instances}
        )
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not crypto
    sim = _Simulator(rng)
    width = max(3, len(str(instances)))
    run = store.create_run(
        run_id,
        sut_name=SUT_NAME,
        scenario_ids=list(SCENARIOS),
        seed=seed,
        config={
            "instances": instances,
            "latency_budget_ms": LATENCY_BUDGET_MS,
            "refund_window_days": REFUND_WINDOW_DAYS,
            "generator": "runstore.demo",
        },
        tags=["demo"],
    )
    failures: list[dict[str, Any]] = []
    by_scenario = {name: {"passed": 0, "failed": 0} for name in SCENARIOS}
    with run:
        run.set_phase(_PHASE, status="running", completed=0, total=instances)
        run.log("info", "demo run started", sut_name=SUT_NAME, seed=seed, instances=instances)
        for number in range(1, instances + 1):
            record = _run_instance(run, sim, f"inst_{number:0{width}d}")
            by_scenario[record["scenario_id"]][record["status"]] += 1
            if record["status"] == "failed":
                failures.append(
                    {
                        "instance_id": record["instance_id"],
                        "scenario_id": record["scenario_id"],
                        "failed_assertions": record["failed_assertions"],
                    }
                )
            if number % _PHASE_EVERY == 0 and number < instances:
                run.set_phase(_PHASE, completed=number)
            if progress is not None:
                progress(number, instances)
        report = {
            "sut_name": SUT_NAME,
            "seed": seed,
            "instances": instances,
            "failed": len(failures),
            "passed": instances - len(failures),
            "by_scenario": by_scenario,
            "failures": failures,
        }
        run.put_artifact("report.json", _json(report), kind="qa_report")
        run.log("info", "demo run finished", passed=instances - len(failures), failed=len(failures))
        run.set_phase(_PHASE, status="done", completed=instances)
    return run.finish()  # idempotent: hands back the summary `with run:` wrote


# -- the command ------------------------------------------------------------------


@click.command()
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Random seed.")
@click.option(
    "--instances",
    type=click.IntRange(min=0, max=100_000),
    default=DEFAULT_INSTANCES,
    show_default=True,
    help="Number of test instances.",
)
@click.option("--run-id", metavar="ID", help="Run id (default: generated run_YYYYMMDD_NNN).")
@json_option
@pass_cli
def demo(cli_ctx: CliContext, seed: int, instances: int, run_id: str | None) -> None:
    """Simulate a Windtunnel run of an e-commerce system into the store.

    The run (sut "ecommerce", scenarios checkout and refund) has instances
    with steps, assertions, request/response artifacts and logs, all derived
    from the seed: two runs with the same seed differ only in timestamps and
    run id. Some instances fail, as a real suite's would.

    \b
    Examples:
      runstore demo
      runstore demo --seed 7 --instances 500 --run-id run_seed7
      runstore --store /tmp/runs demo --json
    """
    cli_ctx.creates_store = True
    store = cli_ctx.store
    progress = Progress(
        TextColumn("[bold]simulating[/] {task.fields[sut]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=cli_ctx.err,
        disable=cli_ctx.json or not cli_ctx.err.is_terminal,
    )
    with progress:
        task = progress.add_task("demo", total=instances, sut="ecommerce")
        summary = run_demo(
            store,
            seed=seed,
            instances=instances,
            run_id=run_id,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    if cli_ctx.json:
        emit_json(summary.model_dump(mode="json"))
        return
    run = summary.run_id
    cli_ctx.out.print(Text.assemble("Run ", (run, "bold cyan"), f" stored in {store.url}"))
    cli_ctx.out.print(summary_panel(summary))
    first = "inst_001/step_001_request.json" if instances else "report.json"
    print_commands(
        cli_ctx.out,
        "Look at it:",
        [
            cli_ctx.command_hint("ls"),
            cli_ctx.command_hint("show", run),
            cli_ctx.command_hint("tail", run, "steps"),
            cli_ctx.command_hint("cat", run, first),
            cli_ctx.command_hint("view"),
        ],
    )
