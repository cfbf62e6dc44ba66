"""Every runstore error: its code, the builtin it also is, and how it travels."""

from __future__ import annotations

import pickle

import pytest

import runstore
from runstore import errors
from runstore.model.errors import RunstoreError

# (class, documented code, builtin a caller may catch instead)
DOCUMENTED: list[tuple[type[RunstoreError], str, type[BaseException] | None]] = [
    (errors.NotFoundError, "not_found", LookupError),
    (errors.InvalidInputError, "invalid_input", ValueError),
    (errors.PermissionDeniedError, "permission_denied", PermissionError),
    (errors.AlreadyExistsError, "already_exists", FileExistsError),
    (errors.BackendUnavailableError, "backend_unavailable", ConnectionError),
    (errors.StorageIOError, "io_error", OSError),
    (errors.UnsupportedError, "unsupported", NotImplementedError),
    (errors.BackendNotFoundError, "backend_not_found", LookupError),
    (errors.CorruptError, "corrupt", ValueError),
    (errors.ConflictError, "conflict", None),
    (errors.PluginError, "plugin_error", None),
]
CODES = [pytest.param(cls, code, id=cls.__name__) for cls, code, _ in DOCUMENTED]
BUILTINS = [
    pytest.param(cls, builtin, id=cls.__name__)
    for cls, _, builtin in DOCUMENTED
    if builtin is not None
]
CLASSES = [pytest.param(cls, id=cls.__name__) for cls, _, _ in DOCUMENTED]


def test_every_exported_error_is_documented_here() -> None:
    exported = {getattr(errors, name) for name in errors.__all__} - {RunstoreError}
    assert exported == {cls for cls, _, _ in DOCUMENTED}


def test_every_error_is_exported_from_the_package_root() -> None:
    for name in errors.__all__:
        assert getattr(runstore, name) is getattr(errors, name)


@pytest.mark.parametrize(("cls", "code"), CODES)
def test_error_has_its_documented_code(cls: type[RunstoreError], code: str) -> None:
    assert cls.code == code
    assert cls("boom").code == code


@pytest.mark.parametrize("cls", CLASSES)
def test_error_derives_from_the_root(cls: type[RunstoreError]) -> None:
    assert issubclass(cls, RunstoreError)


@pytest.mark.parametrize(("cls", "builtin"), BUILTINS)
def test_error_is_caught_by_its_matching_builtin(
    cls: type[RunstoreError], builtin: type[BaseException]
) -> None:
    with pytest.raises(builtin):
        raise cls("boom")


def test_codes_are_unique() -> None:
    codes = [cls.code for cls, _, _ in DOCUMENTED]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", CLASSES)
def test_error_carries_message_and_details(cls: type[RunstoreError]) -> None:
    error = cls("run 'x' not found; list runs with 'runstore ls'", details={"run_id": "x"})
    assert error.message == "run 'x' not found; list runs with 'runstore ls'"
    assert str(error) == error.message
    assert error.details == {"run_id": "x"}


def test_details_default_to_an_empty_dict() -> None:
    assert errors.NotFoundError("gone").details == {}


def test_details_are_copied_not_shared() -> None:
    given = {"run_id": "x"}
    error = errors.NotFoundError("gone", details=given)
    given["run_id"] = "changed"
    assert error.details == {"run_id": "x"}


@pytest.mark.parametrize(("cls", "code"), CODES)
def test_error_pickles_round_trip(cls: type[RunstoreError], code: str) -> None:
    error = cls("what happened; what to do", details={"run_id": "r1", "n": [1, 2]})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert (copy.code, copy.message, copy.details) == (
        code,
        "what happened; what to do",
        {"run_id": "r1", "n": [1, 2]},
    )


@pytest.mark.parametrize(("cls", "code"), CODES)
def test_to_dict_is_code_message_details(cls: type[RunstoreError], code: str) -> None:
    error = cls("boom", details={"k": 1})
    assert error.to_dict() == {"code": code, "message": "boom", "details": {"k": 1}}
