"""The domain model: what runstore persists, its errors, its name rules and its record codec.

The bottom layer: it imports nothing else from runstore. :mod:`~.run` holds
the run's documents (manifest, state, summary, index record, artifact
reference), :mod:`~.errors` the error classes, :mod:`~.names` the rules for
run ids, stream and artifact names, :mod:`~.records` the JSONL codec,
:mod:`~.streams` the schemas of the standard streams, :mod:`~.metadata` the
checks on the caller's data, :mod:`~.checks` bytes against an artifact
reference, :mod:`~.query` the run-index filter language and
:mod:`~.selection` what a query means (the reference every backend matches).
"""
