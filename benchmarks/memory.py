"""Peak memory while streaming: 1M records and a 1 GB artifact into one run.

A child process opens a store, creates an empty run and records its peak RSS
(``VmHWM``) as the baseline, then appends the records and puts the artifact
from a generated binary stream (never held in memory), and records the peak
again. Goal: the peak grows by at most 20 MB over the empty-run baseline.

    python benchmarks/memory.py [--records 1000000] [--artifact-mb 1024] [--store URL]
                                [--profile FILE]

``--profile`` profiles the child (every thread) and merges it into FILE; the
profiler's own memory then inflates the peaks, so read the figures from a run
without it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import Row, merge_profile, parser, run_main

CHILD = r"""
import contextlib, io, json, sys
import runstore

def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")

class Zeros(io.RawIOBase):
    def __init__(self, size):
        self.left = size
    def readable(self):
        return True
    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n

url, records, artifact_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
profile = contextlib.nullcontext()
if len(sys.argv) > 4:  # --profile: the child's threads, dumped for the parent's report
    from pathlib import Path
    sys.path.insert(0, sys.argv[5])
    from _harness import profiling
    profile = profiling(Path(sys.argv[4]))
record = {"instance_id": "inst_001", "step_name": "checkout", "note": "x" * 200}
with profile, runstore.open(url, heartbeat_interval=0) as store:
    run = store.create_run(run_id="run_memory")
    run.append("steps", record)
    run.put_artifact("warmup.bin", b"x" * 1024)
    base = peak_kb()
    for _ in range(records):
        run.append("steps", record)
    after_records = peak_kb()
    run.put_artifact("exports/big.bin", io.BufferedReader(Zeros(artifact_bytes), 1 << 20))
    run.finish()
    print(json.dumps({"base_kb": base, "records_kb": after_records, "final_kb": peak_kb()}))
"""


def main(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or str(Path(tmp) / "runs")
        command = [sys.executable, "-c", CHILD, url, str(args.records), str(args.artifact_mb << 20)]
        if args.profile is not None:  # the work is in the child: profile it there
            dump = args.profile.with_name(args.profile.name + ".child.pstats")
            command += [str(dump), str(Path(__file__).resolve().parent)]
            merge_profile(dump)
        out = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    peaks = json.loads(out)
    base = peaks["base_kb"] / 1024
    return [
        Row(
            f"peak RSS after {args.records} records (MB over empty run)",
            base,
            peaks["records_kb"] / 1024,
            (peaks["records_kb"] - peaks["base_kb"]) / 1024,
            20.0,
            unit="MB",
            higher_is_better=False,
        ),
        Row(
            f"peak RSS after a {args.artifact_mb} MB artifact (MB over empty run)",
            base,
            peaks["final_kb"] / 1024,
            (peaks["final_kb"] - peaks["base_kb"]) / 1024,
            20.0,
            unit="MB",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    p = parser(__doc__ + "\nThe ratio column is the growth in MB (goal: at most 20).")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--artifact-mb", type=int, default=1024)
    p.add_argument("--store", default=None, help="store URL (default: a temporary local store)")
    sys.exit(run_main(main, p.parse_args()))
