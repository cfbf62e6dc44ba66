"""The run index at scale: create and list with 1k, 10k and 100k runs in the store.

Setup takes a fast path (index rows and run directories written in bulk; each
run finished, with a summary, metrics and ``metadata.project`` of ten values);
then it measures, on the real API: one more ``create_run`` (generated id, the
atomic claim included), ``list_runs`` pages with and without filters, a page
filtered by ``where`` (pushed down to SQLite) against the reference semantics
in memory over every record (what the local backend did before), the first
page after a run folder is copied in or deleted by hand (the index reconciles
with the folders), and a full
listing (the page parses records as they are read: also timed reading them
all). Goals: a page <= 0.2 s, a ``where`` page <= 20 ms, the full listing
<= 0.3 s at 100k runs, and create cost flat in the number of runs (ratio of
the cost at N to the cost at the smallest N).

    python benchmarks/index.py [--sizes 1000,10000,100000] [--creates 50] [--profile FILE]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from _harness import Row, parser, run_main

import runstore
from runstore.model.run import RunManifest, RunRecord, RunState, RunSummary, utcnow
from runstore.spi.backends import RunQuery
from runstore_local.backend import LocalBackend

STATUSES: tuple[str, ...] = ("succeeded", "failed", "crashed", "cancelled")
WHERE = "metadata.project = 'p7' AND summary.pass_rate < 0.9"
SPARSE = "metadata.project = 'none' OR metrics.loss < 0"


def populate(root: Path, count: int) -> None:
    """Bulk-create ``count`` finished runs: index rows plus their run directories."""
    backend = LocalBackend(root)
    now = utcnow()
    records = []
    for n in range(count):
        created = now - timedelta(days=1, seconds=count - n)
        run_id = f"run_{created:%Y%m%d}_{n:06d}"
        manifest = RunManifest(
            run_id=run_id,
            timestamp=created,
            sut_name=f"sut{n % 10}",
            tags=["nightly"] if n % 7 == 0 else [],
            metadata={"project": f"p{n % 10}"},
        )
        state = RunState(
            run_id=run_id,
            status=STATUSES[n % 4],
            created_at=created,
            updated_at=created,
            finished_at=created,
        )
        passed = n % 11
        summary = RunSummary(
            run_id=run_id,
            status=state.status,
            instance_count=10,
            pass_count=passed,
            fail_count=10 - passed,
            pass_rate=passed / 10,
            duration_ms=1000 + n % 500,
            metrics={"loss": (n % 13) / 13},
        )
        records.append(RunRecord.build(manifest, state, summary))
        os.mkdir(root / run_id)
    backend._index.upsert_many(records)


def hand_copied(root: Path, elsewhere: Path, store: runstore.Store, repeat: int = 3) -> float:
    """Median of the first ``list_runs(limit=50)`` after a run folder is copied into the
    store by hand, and after it is deleted by hand: the index reconciles with the folders."""
    with runstore.open(str(elsewhere)) as other:
        other.create_run("run_by_hand").finish()
    samples = []
    for _ in range(repeat):
        shutil.copytree(elsewhere / "run_by_hand", root / "run_by_hand")
        samples.append(timed(lambda: store.list_runs(limit=50), 1))
        shutil.rmtree(root / "run_by_hand")
        samples.append(timed(lambda: store.list_runs(limit=50), 1))
    return statistics.median(samples)


def timed(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(args: argparse.Namespace) -> list[Row]:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[Row] = []
    create_costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            root = Path(tmp) / f"s{size}"
            populate(root, size)
            with runstore.open(str(root), heartbeat_interval=0) as store:
                create_costs[size] = timed(lambda: store.create_run(sut_name="bench"), args.creates)
                page = timed(lambda: store.list_runs(limit=50), 20)
                filtered = timed(
                    lambda: store.list_runs(status="failed", sut_name="sut3", limit=50), 20
                )
                tagged = timed(lambda: store.list_runs(tags=["nightly"], limit=50), 20)
                where = timed(
                    lambda: store.list_runs(where=WHERE, order_by="-created_at", limit=50), 20
                )
                sparse = timed(lambda: store.list_runs(where=SPARSE, limit=50), 20)
                full = timed(store.list_runs, 3)
                read_all = timed(lambda: sum(1 for _ in store.list_runs()), 3)
                everything = store.list_runs()
                query = RunQuery(where=WHERE, order_by="-created_at", limit=50)
                reference = timed(functools.partial(query.apply, everything), 3)
                by_hand = hand_copied(root, Path(tmp) / f"hand{size}", store)
            smallest = create_costs[sizes[0]]
            rows += [
                Row(
                    f"create_run at {size} runs / at {sizes[0]}",
                    smallest * 1e3,
                    create_costs[size] * 1e3,
                    create_costs[size] / smallest,
                    2.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(limit=50) at {size} runs",
                    200,
                    page * 1e3,
                    page / 0.2,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(status, sut, limit=50) at {size} runs",
                    200,
                    filtered * 1e3,
                    filtered / 0.2,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(tags, limit=50) at {size} runs",
                    200,
                    tagged * 1e3,
                    tagged / 0.2,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(where, -created_at, limit=50) at {size}",
                    20,
                    where * 1e3,
                    where / 0.02,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"  same / reference in memory at {size}",
                    reference * 1e3,
                    where * 1e3,
                    where / reference,
                    None,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(where matching none, limit=50) at {size}",
                    20,
                    sparse * 1e3,
                    sparse / 0.02,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs(limit=50) after a folder copied/deleted by hand at {size}",
                    200,
                    by_hand * 1e3,
                    by_hand / 0.2,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"list_runs() every run at {size} runs",
                    300,
                    full * 1e3,
                    full / 0.3,
                    1.0,
                    unit="ms",
                    higher_is_better=False,
                ),
                Row(
                    f"  and every record read at {size} runs / list_runs()",
                    full * 1e3,
                    read_all * 1e3,
                    read_all / full,
                    None,
                    unit="ms",
                    higher_is_better=False,
                ),
            ]
    return rows


if __name__ == "__main__":
    p = parser(
        __doc__
        + "\nRatios: measured / goal, runstore / the reference in memory, or create cost at N"
        " / at the smallest N."
    )
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--creates", type=int, default=50)
    sys.exit(run_main(main, p.parse_args()))
