# `make run` and `make test` work on a fresh clone with nothing set: they create the virtualenv
# and install first. Variables: PYTHON, VENV, HOST, PORT, PYTEST_ARGS.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## migrate, then serve the embedded default (SQLite file, tasks in-process)
	$(BIN)/configsync migrate
	$(BIN)/configsync serve --host $(HOST) --port $(PORT)

test: install  ## the whole suite; PostgreSQL and Redis tests skip when absent unless CONFIGSYNC_REQUIRE_SERVICES=1
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check configsync projections tests bench alembic
	$(BIN)/ruff format --check configsync projections tests bench alembic
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix configsync projections tests bench alembic
	$(BIN)/ruff format configsync projections tests bench alembic

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
