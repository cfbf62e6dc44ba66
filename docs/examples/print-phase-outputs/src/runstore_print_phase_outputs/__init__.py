"""An observer plugin: one JSON line per persisted phase output.

runstore calls ``runstore_artifact_stored`` after an artifact's bytes and its
metadata line are durable. This plugin prints the reference of every
artifact stored with ``kind="phase_output"`` as one JSON line, which is what
a pipeline orchestrator records as the phase's output::

    {"run_id":"run_20240115_001","name":"translate/fr.json","kind":"phase_output",
     "sha256":"9f86d0...","size":1234,"media_type":"application/json",
     "created_at":"2024-01-15T10:30:00Z"}

Lines go to stderr, so they never mix with a command's stdout (``--json``
output stays parseable), or are appended to the file named by
``$RUNSTORE_PHASE_OUTPUTS_FILE``.
"""

from __future__ import annotations

import os
import sys

import runstore

__all__ = ["FILE_ENV", "runstore_artifact_stored"]

FILE_ENV = "RUNSTORE_PHASE_OUTPUTS_FILE"


@runstore.hookimpl
def runstore_artifact_stored(ref: runstore.ArtifactRef) -> None:
    if ref.kind != "phase_output":
        return
    line = ref.model_dump_json()
    path = os.environ.get(FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    else:
        print(line, file=sys.stderr, flush=True)
