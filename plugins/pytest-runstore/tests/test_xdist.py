"""xdist: workers report to the controller, the one writer of the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_runstore import encode_nodeid

import runstore

pytest_plugins = ["pytester"]

pytest.importorskip("xdist")


def test_workers_tests_fixture_data_and_logs_land_in_one_run(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        test_spread="""
        import logging, os
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_n(n, runstore_run):
            assert runstore_run.run_id and runstore_run.run_id.startswith("run_")
            print("worker", os.environ["PYTEST_XDIST_WORKER"])
            logging.getLogger("spread").warning("n=%d", n)
            runstore_run.put_artifact("n.txt", str(n))
            runstore_run.log_metric("n", n)
            assert n != 3
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:hypothesispytest",
        "-W",
        "error",
        "-n",
        "2",
        f"--runstore={store_path}",
    )
    result.assert_outcomes(passed=5, failed=1)
    view = only_run()
    instances = {r["nodeid"]: r for r in view.read("instances")}
    assert len(instances) == 6
    assert {r["worker"] for r in instances.values()} <= {"gw0", "gw1"}
    assert instances["test_spread.py::test_n[3]"]["status"] == "failed"
    for n in range(6):
        instance_id = encode_nodeid(f"test_spread.py::test_n[{n}]")
        assert view.read_artifact(f"{instance_id}/n.txt") == str(n).encode()
    logs = list(view.read("logs"))
    assert sorted(r["message"] for r in logs if r["source"] == "log") == [
        f"n={n}" for n in range(6)
    ]
    assert sum(1 for r in logs if r["source"] == "stdout") == 6
    assert sorted(r["value"] for r in view.read("metrics")) == [float(n) for n in range(6)]
    assert view.metadata["xdist_workers"] == 2
    assert view.summary is not None and (view.summary.pass_count, view.summary.fail_count) == (5, 1)
