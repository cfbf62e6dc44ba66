"""``runstore cp`` of a run with many small artifacts, local -> S3 (moto in a child process).

The case from issue 17: a 520 KiB run with 727 artifacts took 83 s to copy
to a local S3 server. Measured against an ``aws s3 sync``-style baseline in
the same run: a raw ``s3fs.S3FileSystem.put(dir, recursive=True)`` of the same
artifact files (s3fs uploads them concurrently). Goal: cp's throughput >= 0.5
of the baseline's. ``cp`` also writes the run's streams, manifest, state,
summary and index record, and hashes every artifact on both sides: the
baseline does none of that.

    python benchmarks/cp_s3.py [--artifacts 727] [--size 700] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _harness import Row, interleaved, parser, run_main

import runstore
from runstore.ops.transfer import copy_runs
from runstore_fsspec.testing import DUMMY_CREDENTIALS, S3Server

BUCKET = "runstore-bench"


def make_run(root: Path, artifacts: int, size: int) -> Path:
    """One finished run with ``artifacts`` artifacts of ``size`` bytes; its artifacts folder."""
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_many", sut_name="bench")
        for n in range(artifacts):
            instance = f"inst_{n // 10:03d}"
            body = (f"{n:08d}".encode() * (size // 8 + 1))[:size]
            run.put_artifact(f"{instance}/step_{n % 10:03d}_request.json", body)
            run.append("steps", {"instance_id": instance, "step": n})
        run.finish()
    return root / "run_many" / "artifacts"


def main(args: argparse.Namespace) -> list[Row]:
    import s3fs

    os.environ.update({k: os.environ.get(k, v) for k, v in DUMMY_CREDENTIALS.items()})
    workdir = Path(tempfile.mkdtemp())
    try:
        folder = make_run(workdir / "runs", args.artifacts, args.size)
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        with S3Server(bucket=BUCKET, mode="process") as s3:
            s3.create_bucket()
            raw = s3fs.S3FileSystem(**s3.storage_options(), skip_instance_cache=True)
            source = runstore.open(str(workdir / "runs"), heartbeat_interval=0)

            def baseline(i: int) -> float:
                start = time.perf_counter()
                raw.put(str(folder), f"{BUCKET}/raw/{i}", recursive=True)
                return int(args.artifacts) / (time.perf_counter() - start)

            def subject(i: int) -> float:
                with runstore.open(s3.url(f"cp/{i}"), heartbeat_interval=0) as target:
                    start = time.perf_counter()
                    report = copy_runs(source, target)
                    elapsed = time.perf_counter() - start
                assert report.copied == ["run_many"], report
                return int(args.artifacts) / elapsed

            try:
                base, ours, ratio = interleaved(args.rounds, baseline, subject)
            finally:
                source.close()
    finally:
        shutil.rmtree(workdir)
    print(
        f"{args.artifacts} artifacts, {total / 1024:.0f} KiB: cp {args.artifacts / ours:.1f} s, "
        f"s3fs put {args.artifacts / base:.1f} s (medians of {args.rounds})",
        file=sys.stderr,
    )
    return [
        Row(
            f"cp of a run with {args.artifacts} artifacts vs s3fs put",
            base,
            ours,
            ratio,
            goal=0.5,
            unit="artifacts/s",
        )
    ]


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--artifacts", type=int, default=727)
    cli.add_argument("--size", type=int, default=700, help="bytes per artifact")
    cli.add_argument("--rounds", type=int, default=3)
    sys.exit(run_main(main, cli.parse_args()))
