"""Building an :class:`~runstore_fsspec.backend.FsspecBackend` from a config string.

Splits the options of :func:`runstore.open` (keyword arguments or URL query
parameters) between the backend, its batching policy, the S3 client and the
fsspec filesystem, and names the package to install for a protocol that is
missing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final

from runstore.registry.config import PROVIDERS
from runstore.spi import BackendNotFoundError, InvalidInputError, Target
from runstore_fsspec._conditional import DEFAULT_PROBE_INTERVAL, ConditionalWrites
from runstore_fsspec._files import FsspecObjects
from runstore_fsspec._objects import ObjectStore
from runstore_fsspec._s3 import S3Objects
from runstore_fsspec._streams import BatchPolicy
from runstore_fsspec.backend import FsspecBackend

__all__ = ["open_backend"]


# -- construction -------------------------------------------------------------------

_POLICY_OPTIONS: Final = {"batch_records": int, "batch_bytes": int, "batch_interval": float}
_BACKEND_OPTIONS: Final = {
    "part_size": int,
    "upload_concurrency": int,
    "index_compact_after": int,
}
_S3_CLIENT_OPTIONS: Final = {
    "retries": int,
    "connect_timeout": float,
    "read_timeout": float,
    "region": str,
}
# How far runstore trusts the endpoint's conditional writes (runstore_fsspec._conditional).
_S3_TRUST_OPTIONS: Final = {"require": str, "probe_interval": float}
_REQUIREMENTS: Final = ("multi_writer",)


def _take(options: dict[str, Any], spec: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    taken: dict[str, Any] = {}
    for name, convert in spec.items():
        if name in options:
            value = options.pop(name)
            try:
                taken[name] = convert(value)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"option {name}={value!r} is not a valid {convert.__name__}",
                    details={"option": name, "value": repr(value)},
                ) from exc
    return taken


def _filesystem_class(protocol: str) -> type[Any]:
    import fsspec

    try:
        cls: type[Any] = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = PROVIDERS.get(protocol)
        hint = f"install {extra}" if extra else f"install the fsspec implementation of {protocol}"
        raise BackendNotFoundError(
            f"the fsspec backend cannot open {protocol}:// URLs: {exc}; {hint}",
            details={"scheme": protocol, "package": extra},
        ) from exc
    except ValueError as exc:
        raise BackendNotFoundError(
            f"no installed backend or fsspec filesystem handles {protocol}:// ({exc}); "
            "check the URL scheme",
            details={"scheme": protocol},
        ) from exc
    return cls


_FSSPEC_COMMON_OPTIONS: Final = frozenset(
    {"use_listings_cache", "listings_expiry_time", "max_paths", "skip_instance_cache"}
)


def _accepted_options(cls: type[Any]) -> set[str]:
    """Keyword options a filesystem class names in any constructor of its MRO.

    fsspec constructors take ``**storage_options`` and silently ignore what
    they do not know, so a misspelled option is refused here instead.
    """
    names = set(_FSSPEC_COMMON_OPTIONS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        names.update(
            p.name
            for p in inspect.signature(init).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        )
    return names - {"asynchronous", "loop"}


def _conditional_writes(objects: S3Objects, options: dict[str, Any]) -> ConditionalWrites:
    trust = _take(options, _S3_TRUST_OPTIONS)
    require = trust.get("require", "")
    if require and require not in _REQUIREMENTS:
        raise InvalidInputError(
            f"option require={require!r} is not known; valid: {', '.join(_REQUIREMENTS)}",
            details={"option": "require", "value": require},
        )
    interval = trust.get("probe_interval", DEFAULT_PROBE_INTERVAL)
    if not interval >= 0:  # also NaN
        raise InvalidInputError(
            f"option probe_interval={interval!r} must be a number of seconds >= 0",
            details={"option": "probe_interval", "value": repr(interval)},
        )
    return ConditionalWrites(
        objects, interval=interval, require_multi_writer=require == "multi_writer"
    )


def _s3_objects(cls: type[Any], target: Target, options: dict[str, Any], **kw: int) -> S3Objects:
    client = _take(options, _S3_CLIENT_OPTIONS)
    allowed = (_accepted_options(cls) | {"profile"}) - {"skip_instance_cache"}
    unknown = sorted(set(options) - allowed - set(_S3_TRUST_OPTIONS))
    if unknown:
        valid = allowed | set(_S3_CLIENT_OPTIONS) | set(_S3_TRUST_OPTIONS) | set(_POLICY_OPTIONS)
        raise InvalidInputError(
            f"unknown S3 option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}",
            details={"options": unknown},
        )
    bucket = target.path.strip("/").split("/", 1)[0]
    if not bucket:
        raise InvalidInputError(
            f"invalid S3 store {target.url!r}: name a bucket, s3://bucket/prefix",
            details={"url": target.url},
        )
    config = dict(options.pop("config_kwargs", None) or {})
    config.setdefault(
        "retries", {"mode": "standard", "total_max_attempts": client.get("retries", 3)}
    )
    config.setdefault("connect_timeout", client.get("connect_timeout", 10.0))
    config.setdefault("read_timeout", client.get("read_timeout", 60.0))
    config.setdefault("max_pool_connections", 32)  # index reads and multipart parts in parallel
    if "region" in client:
        options["client_kwargs"] = {
            **(options.get("client_kwargs") or {}),
            "region_name": client["region"],
        }
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    fs = cls(asynchronous=True, skip_instance_cache=True, config_kwargs=config, **options)
    return S3Objects(
        fs,
        target.path,
        part_size=kw["part_size"],
        concurrency=kw["concurrency"],
        endpoint=str(endpoint) if endpoint else None,
    )


def open_backend(target: Target) -> FsspecBackend:
    """Build the backend for a parsed config string (the plugin's factory)."""
    cls = _filesystem_class(target.scheme)
    options = dict(target.options)
    policy = BatchPolicy(
        **{k.removeprefix("batch_"): v for k, v in _take(options, _POLICY_OPTIONS).items()}
    )
    if policy.records < 1 or policy.bytes < 1 or policy.interval <= 0:
        raise InvalidInputError(
            "batch_records, batch_bytes and batch_interval must be positive",
            details={"policy": repr(policy)},
        )
    tuning = _take(options, _BACKEND_OPTIONS)
    part_size = tuning.get("part_size", 8 << 20)
    concurrency = tuning.get("upload_concurrency", 4)
    objects: ObjectStore
    conditional: ConditionalWrites | None = None
    if getattr(cls, "protocol", None) in ("s3", ("s3", "s3a")) or cls.__name__ == "S3FileSystem":
        trust = {name: options.pop(name) for name in _S3_TRUST_OPTIONS if name in options}
        objects = _s3_objects(cls, target, options, part_size=part_size, concurrency=concurrency)
        conditional = _conditional_writes(objects, trust)
    else:
        accepted = _accepted_options(cls)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {', '.join(unknown)} for {target.scheme}://; valid: "
                f"{', '.join(sorted(accepted | set(_POLICY_OPTIONS) | set(_BACKEND_OPTIONS)))}",
                details={"options": unknown},
            )
        try:
            fs = cls(**options)
        except TypeError as exc:
            raise InvalidInputError(
                f"invalid options for {target.scheme}://: {exc}", details={"error": str(exc)}
            ) from exc
        objects = FsspecObjects(fs, target.url, fs._strip_protocol(target.url))
    return FsspecBackend(
        objects,
        policy=policy,
        index_compact_after=tuning.get("index_compact_after", 64),
        conditional=conditional,
    )
