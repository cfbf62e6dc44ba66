"""Reading a stream: ``view.read()`` against a raw orjson loop over the same file.

python benchmarks/read.py [--records 1000000] [--rounds 3] [--profile FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson
from _harness import Row, interleaved, parser, run_main
from append import make_records

import runstore


def main(args: argparse.Namespace) -> list[Row]:
    records = make_records(10_000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        with runstore.open(str(root), heartbeat_interval=0) as store:
            with store.create_run(run_id="run_read") as run:
                for i in range(args.records):
                    run.append("steps", records[i % len(records)])
            path = root / "run_read" / "steps.jsonl"

            def raw(_: int) -> float:
                start = time.perf_counter()
                count = 0
                with path.open("rb") as handle:
                    for line in handle:
                        orjson.loads(line)
                        count += 1
                return count / (time.perf_counter() - start)

            def ours(_: int) -> float:
                start = time.perf_counter()
                count = 0
                for _record in store.get_run("run_read").read("steps"):
                    count += 1
                assert count == args.records
                return count / (time.perf_counter() - start)

            b, m, ratio = interleaved(args.rounds, raw, ours)
    return [Row(f"read() of {args.records} records / raw orjson loop", b, m, ratio, 0.5)]


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    sys.exit(run_main(main, p.parse_args()))
