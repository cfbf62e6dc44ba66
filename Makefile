# The README's commands. Each target bootstraps .venv from python3 and PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
REQS   := requirements-dev.txt core/pyproject.toml $(wildcard plugins/*/pyproject.toml)
S3RVER := .s3rver/node_modules/.bin/s3rver

.PHONY: all test lint typecheck format fmt pytest demo bench docs clean browser postgres s3rver

all: test

DEMO_STAMP := $(VENV)/.demo-stamp

# make demo needs only the core (with the viewer) and the local backend: a small,
# quick install. make test adds the dev toolchain to the same .venv.
$(DEMO_STAMP): core/pyproject.toml plugins/runstore-local/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e './core[view]' -e ./plugins/runstore-local
	touch $@

$(STAMP): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(DEMO_STAMP)

## make test: format check, lint, mypy strict, the docs build and every test
test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# One mypy run per folder: test folders of different packages share module
# names (conftest), which one run cannot hold.
# Nested test folders with their own conftest get their own run too.
TYPED := core/src core/tests $(wildcard plugins/*/src plugins/*/tests docs/examples/*/src docs/examples/*/tests) tests tests/reliability benchmarks

typecheck: $(STAMP)
	@set -e; for dir in $(TYPED); do \
	  if [ -n "$$(find $$dir -name "*.py" 2>/dev/null | head -1)" ]; then ex=""; [ "$$dir" = tests ] && ex="--exclude ^tests/reliability/"; \
	  echo "mypy $$dir"; $(BIN)/mypy $$dir $$ex; fi; \
	done

pytest: $(STAMP) browser postgres $(S3RVER)
	$(BIN)/pytest

## make s3rver: the s3rver S3 emulator (npm) into .s3rver/, which the fsspec plugin's tests
## start (it ignores conditional writes, which runstore must notice); needs node and npm
s3rver: $(S3RVER)
$(S3RVER):
	npm install --prefix .s3rver --no-audit --no-fund --loglevel=error s3rver@3.7.1

## make browser: Debian's Chromium, which tests/test_cli_view.py drives through Playwright
## (idempotent; Playwright's own browser download does not work here and is never used)
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make browser: could not install $(CHROMIUM); the viewer's browser tests will skip"

## make postgres: PostgreSQL server binaries (initdb, pg_ctl) for runstore-postgres's tests,
## which start a throwaway server (idempotent; Debian's postgresql package when root)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "make postgres: could not install the PostgreSQL server; runstore-postgres's tests will skip"

## make docs: build the documentation site into site/, strictly (a warning is an error)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## make demo: simulate a Windtunnel run into ./runs, then print how to look at it
demo: $(DEMO_STAMP)
	$(BIN)/runstore demo
	@echo "(runstore is $(BIN)/runstore: activate the venv with '. $(BIN)/activate' to run it as shown)"

## make fmt: apply formatting and safe lint fixes
fmt format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache site
