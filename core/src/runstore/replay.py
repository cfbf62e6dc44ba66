"""Replay bundles: everything needed to re-execute one instance of a run.

``view.instance("inst_001")`` returns an :class:`InstanceBundle`: the run's
seed, config and manifest, the instance record, its steps in the order they
were appended, its assertions, its log lines, its records in any other stream
(``streams``), and references to its artifacts, whose bytes are read only
when asked for (:meth:`InstanceBundle.read_artifact`). An instance's records
are those whose ``instance_id`` is the instance; its artifacts are those named
``<instance_id>/...`` plus any artifact one of its records names in a
top-level value (e.g. ``"request_artifact": "shared/catalog.json"``).

A damaged line elsewhere in a stream does not stop a bundle: the streams are
read with ``errors="skip"``. A line that cannot be read might have been the
instance's, so the bundle counts them (``damaged``, per stream).

:meth:`InstanceBundle.export` (and ``runstore replay RUN INSTANCE --out DIR``)
writes the bundle as plain files, so it can travel to another machine or a
bug report::

    DIR/bundle.json                     format, run, seed, config, records, artifact refs
    DIR/artifacts/<artifact name>       each artifact's bytes (sha256 checked on the way)

:func:`load` reads such a directory back into an :class:`InstanceBundle`
whose ``read_artifact`` reads (and checks) the exported files.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from runstore.model.checks import checked, checked_async
from runstore.model.errors import (
    AlreadyExistsError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    RunstoreError,
)
from runstore.model.names import validate_artifact_name
from runstore.model.run import ArtifactRef, RunManifest
from runstore.reading import readable_artifacts
from runstore.spi.layout import ARTIFACTS_STREAM

if TYPE_CHECKING:
    from runstore.aio import AsyncRunView
    from runstore.store import RunView

__all__ = ["BUNDLE_FILE", "BUNDLE_FORMAT", "AsyncInstanceBundle", "InstanceBundle", "load"]

BUNDLE_FORMAT: Final = "runstore.instance-bundle/1"
"""Value of ``format`` in ``bundle.json``; changes only when the layout changes."""

BUNDLE_FILE: Final = "bundle.json"
ARTIFACTS_DIR: Final = "artifacts"
_STANDARD: Final = frozenset({"instances", "steps", "assertions", "logs", ARTIFACTS_STREAM})
_CHUNK: Final = 1 << 20


@dataclass
class _Bundle:
    run_id: str
    instance_id: str
    seed: int | None
    config: dict[str, Any]
    instance: dict[str, Any] | None
    steps: list[dict[str, Any]] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[ArtifactRef] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    """Log lines of the instance (``logs`` records with its ``instance_id``)."""
    streams: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Its records in every other stream (user streams such as ``phase_outputs``)."""
    manifest: RunManifest | None = None
    """The run's manifest (``sut_name``, ``scenario_ids``, ``tags``, ...)."""
    damaged: dict[str, int] = field(default_factory=dict)
    """Lines per stream that could not be read (any may have been the instance's); ``{}``: none."""

    def artifact(self, name: str) -> ArtifactRef:
        """The reference of one of the bundle's artifacts, by its full name."""
        for ref in self.artifacts:
            if ref.name == name:
                return ref
        names = ", ".join(r.name for r in self.artifacts) or "none"
        raise NotFoundError(
            f"artifact {name!r} is not part of instance {self.instance_id!r} of run "
            f"{self.run_id!r}; its artifacts: {names}",
            details={"run_id": self.run_id, "instance_id": self.instance_id, "name": name},
        )

    def to_json(self) -> dict[str, Any]:
        """The bundle as JSON-ready data: what ``bundle.json`` holds."""
        return {
            "format": BUNDLE_FORMAT,
            "run_id": self.run_id,
            "instance_id": self.instance_id,
            "seed": self.seed,
            "config": self.config,
            "manifest": None if self.manifest is None else self.manifest.model_dump(mode="json"),
            "instance": self.instance,
            "steps": self.steps,
            "assertions": self.assertions,
            "logs": self.logs,
            "streams": self.streams,
            "damaged": self.damaged,
            "artifacts": [
                {**ref.model_dump(mode="json"), "path": f"{ARTIFACTS_DIR}/{ref.name}"}
                for ref in self.artifacts
            ],
        }

    def _fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _Bundle.__dataclass_fields__}


class InstanceBundle(_Bundle):
    """One instance of a run, ready to replay (sync API); see the module docs.

    :ivar seed: the run's seed. :ivar config: the run's config.
    :ivar instance: the instance record (its last one), ``None`` if none was appended.
    :ivar steps: its step records, in the order they were appended.
    :ivar assertions: its assertion records, in order.
    :ivar artifacts: references to its artifacts; bytes through :meth:`read_artifact`.
    :ivar damaged: lines per stream that could not be read; any may have been its own.
    """

    def __init__(
        self, *, opener: Callable[[ArtifactRef, bool], Iterator[bytes]], **fields: Any
    ) -> None:
        super().__init__(**fields)
        self._opener = opener

    def open_artifact(self, name: str, *, verify: bool = True) -> Iterator[bytes]:
        """One of its artifacts' bytes in chunks; ``verify`` checks the sha256 at the end."""
        return self._opener(self.artifact(name), verify)

    def read_artifact(self, name: str, *, verify: bool = True) -> bytes:
        """One of its artifacts' bytes (read now, not before), sha256 checked by default."""
        return b"".join(self.open_artifact(name, verify=verify))

    def export(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the bundle as files (``bundle.json`` + ``artifacts/``); returns bundle.json's path.

        ``bundle.json`` is written last, so a directory that has one holds a
        complete export. An existing export is refused unless ``overwrite``.
        """
        writer = _Exporter(Path(out_dir), overwrite)
        for ref in self.artifacts:
            writer.write_artifact(ref, self.open_artifact(ref.name, verify=True))
        return writer.finish(self)


class AsyncInstanceBundle(_Bundle):
    """One instance of a run, ready to replay (async API): ``await view.instance(id)``."""

    def __init__(self, *, view: AsyncRunView, **fields: Any) -> None:
        super().__init__(**fields)
        self._view = view

    async def open_artifact(self, name: str, *, verify: bool = True) -> AsyncIterator[bytes]:
        """One of its artifacts' bytes in chunks; ``verify`` checks the sha256 at the end."""
        ref = self.artifact(name)
        chunks = self._view.open_artifact(ref.name)
        async for chunk in checked_async(chunks, ref) if verify else chunks:
            yield chunk

    async def read_artifact(self, name: str, *, verify: bool = True) -> bytes:
        """One of its artifacts' bytes (read now, not before), sha256 checked by default."""
        return b"".join([chunk async for chunk in self.open_artifact(name, verify=verify)])

    async def export(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the bundle as files; see :meth:`InstanceBundle.export`."""
        writer = _Exporter(Path(out_dir), overwrite)
        for ref in self.artifacts:
            handle = writer.open_artifact(ref)
            try:
                async for chunk in self.open_artifact(ref.name, verify=True):
                    handle.write(chunk)
            finally:
                handle.close()
        return writer.finish(self)


# -- building a bundle from a run -------------------------------------------------------


def _mentions(records: Iterable[dict[str, Any]]) -> set[str]:
    """Strings a record holds at top level (directly or in a list): candidate artifact names."""
    found: set[str] = set()
    for record in records:
        for value in record.values():
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
    return found


async def load_instance(view: AsyncRunView, instance_id: str) -> AsyncInstanceBundle:
    """The replay bundle of one instance of the run behind ``view`` (each stream read once).

    Damaged lines are skipped and counted in the bundle's ``damaged``.
    """
    instance: dict[str, Any] | None = None
    collected: dict[str, list[dict[str, Any]]] = {}
    damaged: dict[str, int] = {}
    for stream in await view.streams():
        if stream == ARTIFACTS_STREAM:
            continue
        mine: list[dict[str, Any]] = []
        async for batch in view.read_batches(stream, errors="skip"):
            mine.extend(
                r for r in batch if isinstance(r, dict) and r.get("instance_id") == instance_id
            )
        if mine:
            collected[stream] = mine
        if view.damaged.get(stream):
            damaged[stream] = view.damaged[stream].total
    instances = collected.pop("instances", [])
    if instances:
        instance = instances[-1]  # a harness may re-append an instance as it changes; last wins
    steps = collected.pop("steps", [])
    assertions = collected.pop("assertions", [])
    logs = collected.pop("logs", [])
    prefix = f"{instance_id}/"
    named = _mentions(
        [*instances, *steps, *assertions, *(r for v in collected.values() for r in v)]
    )
    refs, unreadable = await readable_artifacts(view)
    if unreadable.total:
        damaged[ARTIFACTS_STREAM] = unreadable.total
    artifacts = [ref for ref in refs if ref.name.startswith(prefix) or ref.name in named]
    if instance is None and not (steps or assertions or logs or collected or artifacts):
        details: dict[str, Any] = {"run_id": view.run_id, "instance_id": instance_id}
        note = ""
        if damaged:  # its records may be among them
            details["damaged"] = damaged
            note = f"; {sum(damaged.values())} damaged lines could not be read (runstore verify)"
        raise NotFoundError(
            f"instance {instance_id!r} not found in run {view.run_id!r}: no record has "
            f"instance_id {instance_id!r} and no artifact is named {prefix}...{note}",
            details=details,
        )
    return AsyncInstanceBundle(
        view=view,
        run_id=view.run_id,
        instance_id=instance_id,
        seed=view.manifest.seed,
        config=view.manifest.config,
        instance=instance,
        steps=steps,
        assertions=assertions,
        artifacts=artifacts,
        logs=logs,
        streams=collected,
        manifest=view.manifest,
        damaged=damaged,
    )


def sync_bundle(bundle: AsyncInstanceBundle, view: RunView) -> InstanceBundle:
    """The sync face of ``bundle``: artifact bytes read through the sync ``view``."""

    def opener(ref: ArtifactRef, verify: bool) -> Iterator[bytes]:
        chunks = view.open_artifact(ref.name)
        return checked(chunks, ref) if verify else chunks

    return InstanceBundle(opener=opener, **bundle._fields())


# -- export and load ---------------------------------------------------------------------


class _Exporter:
    def __init__(self, out: Path, overwrite: bool) -> None:
        self.out = out
        if (out / BUNDLE_FILE).exists() and not overwrite:
            raise AlreadyExistsError(
                f"{out / BUNDLE_FILE} exists; choose another directory or overwrite it "
                "(--force on the command line)",
                details={"path": str(out / BUNDLE_FILE)},
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot create {out}: {exc.strerror}", details={"path": str(out)}
            ) from exc

    def _target(self, name: str) -> Path:
        validate_artifact_name(name)  # relative, no '..': it stays under artifacts/
        return self.out / ARTIFACTS_DIR / name

    def open_artifact(self, ref: ArtifactRef) -> Any:
        target = self._target(ref.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("wb")

    def write_artifact(self, ref: ArtifactRef, chunks: Iterable[bytes]) -> None:
        with self.open_artifact(ref) as handle:
            for chunk in chunks:
                handle.write(chunk)

    def finish(self, bundle: _Bundle) -> Path:
        path = self.out / BUNDLE_FILE
        temp = path.with_name(f".{BUNDLE_FILE}.tmp")
        temp.write_bytes(orjson.dumps(bundle.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        temp.replace(path)
        return path


def _file_opener(root: Path) -> Callable[[ArtifactRef, bool], Iterator[bytes]]:
    def opener(ref: ArtifactRef, verify: bool) -> Iterator[bytes]:
        validate_artifact_name(ref.name)
        path = root / ARTIFACTS_DIR / ref.name
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFoundError(
                f"{path} is missing from the exported bundle",
                details={"path": str(path), "name": ref.name},
            ) from None

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk

        return checked(chunks(), ref, str(path)) if verify else chunks()

    return opener


def load(path: str | os.PathLike[str]) -> InstanceBundle:
    """Read a bundle exported by :meth:`InstanceBundle.export` (give the directory or bundle.json).

    Its ``read_artifact`` reads the exported files and checks their sha256.
    """
    given = Path(path)
    file = given if given.name == BUNDLE_FILE and given.is_file() else given / BUNDLE_FILE
    try:
        data = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(
            f"{file} not found; 'runstore replay RUN INSTANCE --out DIR' writes one",
            details={"path": str(file)},
        ) from None
    except orjson.JSONDecodeError as exc:
        raise CorruptError(
            f"{file} is not valid JSON: {exc}", details={"path": str(file)}
        ) from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InvalidInputError(
            f"{file} is not a runstore instance bundle (format {found!r}, "
            f"expected {BUNDLE_FORMAT!r})",
            details={"path": str(file), "format": found},
        )
    try:
        refs = [
            ArtifactRef.model_validate({k: v for k, v in a.items() if k != "path"})
            for a in data["artifacts"]
        ]
        for ref in refs:
            validate_artifact_name(ref.name)
        manifest = data.get("manifest")
        return InstanceBundle(
            opener=_file_opener(file.parent),
            run_id=data["run_id"],
            instance_id=data["instance_id"],
            seed=data["seed"],
            config=data["config"],
            instance=data["instance"],
            steps=data["steps"],
            assertions=data["assertions"],
            artifacts=refs,
            logs=data.get("logs", []),
            streams=data.get("streams", {}),
            manifest=None if manifest is None else RunManifest.model_validate(manifest),
            damaged=data.get("damaged", {}),
        )
    except RunstoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptError(
            f"{file} is damaged: {exc!r}", details={"path": str(file), "error": repr(exc)}
        ) from None
