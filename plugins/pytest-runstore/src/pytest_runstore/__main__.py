"""``python -m pytest_runstore``: the history commands."""

from pytest_runstore.cli import main

main()
