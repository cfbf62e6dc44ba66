"""``python -m runstore``: the same as the ``runstore`` console script."""

from runstore.cli import main

if __name__ == "__main__":
    main()
