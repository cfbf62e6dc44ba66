"""Compare two runs instance by instance: regressions, fixes, new and missing instances.

``compare_runs(view_a, view_b)`` pairs the instances of two runs by
``instance_id``, whatever order they were written in, and reports:

* **regressions**: passed in A, failed or error in B;
* **fixes**: failed or error in A, passed in B;
* **changed**: any other change of outcome (passed to skipped, say), or the
  same outcome with different assertion results (and, with ``steps=True``,
  different steps);
* **new** and **missing** instances (in B only, in A only);
* per instance, the assertions whose result changed (``passed -> failed``),
  paired by step and name;
* whether each stream holds the same records **in any order**, ignoring what
  legitimately differs between two runs of the same seed and config (times,
  run ids, durations): so two equal runs written by concurrent workers in a
  different order compare equal.

An instance's outcome is its record's ``status`` (``passed``, ``failed``,
``error``, ``skipped``, or your own), else its boolean ``passed``, as the
summary counts it; if an instance has several records, the last one counts.
Pure Python on the public read API: it needs no extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from runstore.store import RunView

__all__ = [
    "VOLATILE_KEYS",
    "AssertionChange",
    "Comparison",
    "InstanceChange",
    "StepChange",
    "compare_runs",
    "outcome_of",
]

VOLATILE_KEYS: Final = frozenset(
    {"ts", "timestamp", "duration_ms", "elapsed_ms", "run_id", "runstore_version", "revision"}
)
"""Keys ignored when records are compared (and every key ending in ``_at``)."""

FAILING: Final = frozenset({"failed", "error"})
_STANDARD: Final = ("instances", "steps", "assertions")

ChangeKind = Literal["regression", "fix", "changed", "new", "missing"]


def outcome_of(record: Any) -> str | None:
    """``status`` if the record has one, else ``passed``/``failed`` from a boolean ``passed``."""
    if not isinstance(record, dict):
        return None
    status = record.get("status")
    if isinstance(status, str):
        return status
    passed = record.get("passed")
    if passed is True:
        return "passed"
    if passed is False:
        return "failed"
    return None


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _stable(v)
            for k, v in value.items()
            if k not in VOLATILE_KEYS and not k.endswith("_at")
        }
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _digest(record: Any) -> int:
    text = orjson.dumps(_stable(record), option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest())


_MODULUS: Final = 1 << 128


@dataclass(frozen=True)
class AssertionChange:
    """One assertion of an instance whose result differs (``None``: absent in that run)."""

    name: str
    step: str | None
    passed_a: bool | None
    passed_b: bool | None

    def __str__(self) -> str:
        where = f"{self.step}/{self.name}" if self.step else self.name
        return f"assertion {where}: {_word(self.passed_a)} -> {_word(self.passed_b)}"


@dataclass(frozen=True)
class StepChange:
    """One step of an instance that differs: its position, name and the fields that differ."""

    index: int
    step_name: str | None
    fields: dict[str, tuple[Any, Any]]
    """``{"observation.total": (a, b)}``; a whole step missing in one run is ``{"": (a, b)}``."""

    def __str__(self) -> str:
        parts = ", ".join(
            f"{path or 'step'}: {_json(a)} -> {_json(b)}" for path, (a, b) in self.fields.items()
        )
        return f"step {self.index} {self.step_name or ''}: {parts}".replace("  ", " ")


@dataclass(frozen=True)
class InstanceChange:
    """How one instance differs between run A and run B."""

    instance_id: str
    kind: ChangeKind
    status_a: str | None
    status_b: str | None
    assertions: list[AssertionChange] = field(default_factory=list)
    steps: list[StepChange] = field(default_factory=list)

    def __str__(self) -> str:
        if self.kind == "new":
            return f"{self.instance_id}: new ({self.status_b})"
        if self.kind == "missing":
            return f"{self.instance_id}: missing (was {self.status_a})"
        return f"{self.instance_id}: {self.status_a} -> {self.status_b}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "kind": self.kind,
            "status_a": self.status_a,
            "status_b": self.status_b,
            "assertions": [
                {"name": a.name, "step": a.step, "passed_a": a.passed_a, "passed_b": a.passed_b}
                for a in self.assertions
            ],
            "steps": [
                {
                    "index": s.index,
                    "step_name": s.step_name,
                    "fields": {k: {"a": a, "b": b} for k, (a, b) in s.fields.items()},
                }
                for s in self.steps
            ],
        }


@dataclass
class Comparison:
    """What :func:`compare_runs` found, instance by instance."""

    run_a: str
    run_b: str
    regressions: list[InstanceChange] = field(default_factory=list)
    fixes: list[InstanceChange] = field(default_factory=list)
    changed: list[InstanceChange] = field(default_factory=list)
    new: list[InstanceChange] = field(default_factory=list)
    missing: list[InstanceChange] = field(default_factory=list)
    unchanged: int = 0
    """Instances in both runs with the same outcome and assertion results."""
    streams: dict[str, bool] = field(default_factory=dict)
    """Per stream of either run: whether both hold the same records, in any order."""

    @property
    def identical(self) -> bool:
        """No instance differs and every stream holds the same records (in any order)."""
        return not self.differences and all(self.streams.values())

    @property
    def differences(self) -> list[InstanceChange]:
        """Every instance that differs: regressions first, then fixes, changed, new, missing."""
        return [*self.regressions, *self.fixes, *self.changed, *self.new, *self.missing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "identical": self.identical,
            "counts": {
                "regressions": len(self.regressions),
                "fixes": len(self.fixes),
                "changed": len(self.changed),
                "new": len(self.new),
                "missing": len(self.missing),
                "unchanged": self.unchanged,
            },
            "regressions": [c.to_dict() for c in self.regressions],
            "fixes": [c.to_dict() for c in self.fixes],
            "changed": [c.to_dict() for c in self.changed],
            "new": [c.to_dict() for c in self.new],
            "missing": [c.to_dict() for c in self.missing],
            "streams": dict(self.streams),
        }


@dataclass
class _Side:
    """What one run says about its instances."""

    outcomes: dict[str, str | None] = field(default_factory=dict)
    assertions: dict[str, dict[tuple[str | None, str, int], bool | None]] = field(
        default_factory=dict
    )
    steps: dict[str, list[Any]] = field(default_factory=dict)
    digests: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per stream: its record count and the sum of its records' hashes (a multiset's
    fingerprint: the same whatever the order, in constant memory)."""


def _read(view: RunView, *, steps: bool) -> _Side:
    side = _Side()
    for stream in sorted(set(view.streams()) | set(_STANDARD)):
        count = total = 0
        for record in view.read(stream):
            count += 1
            total = (total + _digest(record)) % _MODULUS
            if not isinstance(record, dict):
                continue
            instance = record.get("instance_id")
            if not isinstance(instance, str):
                continue
            if stream == "instances":
                side.outcomes[instance] = outcome_of(record)
            elif stream == "assertions":
                _add_assertion(side.assertions.setdefault(instance, {}), record)
            elif stream == "steps" and steps:
                side.steps.setdefault(instance, []).append(_stable(record))
        side.digests[stream] = (count, total)
    return side


def _add_assertion(found: dict[tuple[str | None, str, int], bool | None], record: Any) -> None:
    step = record.get("step_name") or record.get("step_id")
    name = str(record.get("name"))
    occurrence = 0
    while (step, name, occurrence) in found:  # the same check twice in one step
        occurrence += 1
    passed = record.get("passed")
    found[(step, name, occurrence)] = passed if isinstance(passed, bool) else None


def compare_runs(view_a: RunView, view_b: RunView, *, steps: bool = False) -> Comparison:
    """Compare run B with run A instance by instance (see the module docs).

    :param view_a: the baseline run (``store.get_run(...)``), of any store.
    :param view_b: the run compared with it.
    :param steps: also compare each instance's steps, field by field.
    """
    a, b = _read(view_a, steps=steps), _read(view_b, steps=steps)
    result = Comparison(view_a.run_id, view_b.run_id)
    for stream in sorted(set(a.digests) | set(b.digests)):
        result.streams[stream] = a.digests.get(stream, (0, 0)) == b.digests.get(stream, (0, 0))
    for instance in _ordered(a.outcomes, b.outcomes):
        if instance not in b.outcomes:
            result.missing.append(InstanceChange(instance, "missing", a.outcomes[instance], None))
            continue
        if instance not in a.outcomes:
            result.new.append(InstanceChange(instance, "new", None, b.outcomes[instance]))
            continue
        before, after = a.outcomes[instance], b.outcomes[instance]
        assertions = _assertion_changes(a.assertions.get(instance), b.assertions.get(instance))
        step_changes = (
            _step_changes(a.steps.get(instance, []), b.steps.get(instance, [])) if steps else []
        )
        if before == "passed" and after in FAILING:
            kind: ChangeKind | None = "regression"
        elif before in FAILING and after == "passed":
            kind = "fix"
        elif before != after or assertions or step_changes:
            kind = "changed"
        else:
            kind = None
        if kind is None:
            result.unchanged += 1
            continue
        change = InstanceChange(instance, kind, before, after, assertions, step_changes)
        {"regression": result.regressions, "fix": result.fixes, "changed": result.changed}[
            kind
        ].append(change)
    return result


def _ordered(*maps: dict[str, Any]) -> list[str]:
    return sorted({key for mapping in maps for key in mapping})


def _assertion_changes(
    a: dict[tuple[str | None, str, int], bool | None] | None,
    b: dict[tuple[str | None, str, int], bool | None] | None,
) -> list[AssertionChange]:
    a, b = a or {}, b or {}
    changes = []
    for key in sorted(set(a) | set(b), key=lambda k: (k[0] or "", k[1], k[2])):
        if a.get(key, "absent") != b.get(key, "absent"):
            step, name, _ = key
            changes.append(AssertionChange(name, step, a.get(key), b.get(key)))
    return changes


def _step_changes(a: list[Any], b: list[Any]) -> list[StepChange]:
    changes = []
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else None
        right = b[index] if index < len(b) else None
        if left == right:
            continue
        name = (right or left or {}).get("step_name")
        if left is None or right is None:
            fields = {"": (left, right)}
        else:
            fields = dict(_paths(left, right, ""))
        changes.append(StepChange(index + 1, name, fields))
    return changes


def _paths(a: Any, b: Any, prefix: str) -> Iterable[tuple[str, tuple[Any, Any]]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _paths(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix[:-1], (a, b)


def _word(passed: bool | None) -> str:
    return {True: "passed", False: "failed", None: "absent"}[passed]


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
