"""The writer the crash test kills: a fork server that starts one writer per trial.

``python crash_writer.py URL [s3]`` imports runstore (and the S3 stack) once,
then serves commands read from stdin, so a trial costs a fork, not an
interpreter start:

``fork SEED ACTIONS DURABILITY FINISH``
    fork a writer; print ``pid PID``. The writer resumes every unfinished
    ``crash`` run of the store, then performs ACTIONS random actions (append,
    put_artifact, set_phase, finish, create) and prints one acknowledgement
    line the moment each call returns:

    ``run ID`` created, ``rec ID STREAM SEQ`` appended, ``art ID NAME`` stored,
    ``phase ID N`` set, ``fin ID`` finished.

    With FINISH=1 it then finishes every live run and prints ``end``.
``reap PID``
    wait for that writer; print ``reaped PID STATUS``.

Acknowledgements are single ``write(2)`` calls on the pipe (atomic below
PIPE_BUF), so a SIGKILL never tears one.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from harness import CRASH_STREAMS, artifact_bytes, artifact_name, record_for

import runstore


def emit(*parts: object) -> None:
    os.write(1, (" ".join(map(str, parts)) + "\n").encode())


def writer(url: str, seed: int, actions: int, durability: str, finish_all: bool) -> None:
    rng = random.Random(seed)
    options: dict[str, Any] = {"heartbeat_interval": 0.05}
    if durability != "default":
        options["durability"] = durability
    store = runstore.open(url, **options)
    live: dict[str, runstore.Run] = {}
    for record in store.list_runs(status=["created", "running"], sut_name="crash"):
        try:
            live[record.run_id] = store.resume_run(record.run_id)
        except runstore.ConflictError:
            continue  # it finished after all (the index lags by one write)
    emit("ready", len(live))
    for _ in range(actions):
        if len(live) < 3 or (len(live) < 4 and rng.random() < 0.01):
            created = store.create_run(sut_name="crash", seed=seed)
            live[created.run_id] = created
            emit("run", created.run_id)
            continue
        run_id = rng.choice(sorted(live))
        run = live[run_id]
        counts = run.record_counts
        roll = rng.random()
        if roll < 0.82:
            stream = rng.choice(CRASH_STREAMS)
            seq = counts.get(stream, 0)
            run.append(stream, record_for(run_id, stream, seq))
            emit("rec", run_id, stream, seq)
        elif roll < 0.91:
            name = artifact_name(counts.get("artifacts", 0))
            run.put_artifact(name, artifact_bytes(run_id, name))
            emit("art", run_id, name)
        elif roll < 0.975:
            phase = run.state.phases.get("work")
            done = (phase.completed if phase else 0) + 1
            run.set_phase("work", status="running", completed=done)
            emit("phase", run_id, done)
        elif sum(counts.values()) >= 40:
            run.finish()
            del live[run_id]
            emit("fin", run_id)
    if finish_all:
        for run_id, run in sorted(live.items()):
            run.finish()
            emit("fin", run_id)
        store.close()
        emit("end")


def serve(url: str) -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "fork":
            seed, actions, durability, finish = args
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(0)
                    writer(url, int(seed), int(actions), durability, finish == "1")
                except BaseException as exc:
                    emit("error", type(exc).__name__, str(exc).replace("\n", " "))
                    code = 1
                os._exit(code)
            emit("pid", pid)
        elif command == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            emit("reaped", args[0], status)


if __name__ == "__main__":
    if sys.argv[2:] == ["s3"]:
        import s3fs  # noqa: F401

        import runstore_fsspec.backend  # noqa: F401 - preloaded before forking
    serve(sys.argv[1])
