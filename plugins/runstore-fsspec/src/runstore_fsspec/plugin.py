"""Entry point ``fsspec`` of group ``runstore.plugins``: hook implementations only.

fsspec, s3fs and botocore are imported when a store is opened, not when
runstore discovers its plugins.
"""

from __future__ import annotations

from collections.abc import Callable

from runstore import BackendSpec, Target, hookimpl

__all__ = ["runstore_register_backends"]


def _factory(target: Target) -> object:
    from runstore_fsspec._open import open_backend

    return open_backend(target)


def _known_protocol(scheme: str) -> bool:
    import fsspec

    return scheme in fsspec.available_protocols()


@hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="fsspec",
            factory=_factory,
            schemes=("s3", "s3a", "gs", "gcs", "az", "abfs"),
            fallback=True,
            accepts=_known_protocol,
            description=(
                "any fsspec filesystem: S3 (runstore-fsspec[s3]), GCS, Azure, ...; "
                "force it for other schemes with fsspec+memory://, fsspec+file://"
            ),
            distribution="runstore-fsspec",
        )
    )
