# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := docker-compose chromium fonts-liberation prometheus

.PHONY: install system-deps run test lint format bench clean backup restore

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['ledgerly']['no-deps-dependencies']))")
	rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests use (docker-compose validates the compose file offline; the browser
# tests drive Debian's chromium through Python playwright, never `playwright install`; prometheus
# gives promtool, which checks and unit-tests deploy/prometheus/rules.yml).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

run: install
	$(PY) -m ledgerly.devstack

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

# The golden-set evaluation runs on its own private Postgres and Redis, never on a database
# configured in the environment, and against the simulator even where a Claude key is set.
# The suite runs in PYTEST_WORKERS processes (pytest-xdist), each with its own private Postgres
# and Redis; a test file stays in one process, so its module fixtures are built once.
# Schemathesis' per-operation tests collapse under xdist (2 of 18 operations ran): that file
# runs on its own, in one process.
PYTEST_WORKERS ?= 2
FUZZ_TESTS := tests/api/test_schemathesis.py
test: install system-deps lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --ignore=$(FUZZ_TESTS)
	$(PY) -m pytest $(FUZZ_TESTS)
	LEDGERLY_EVAL_PRIVATE_SERVICES=1 LLM_BACKEND=simulator $(PY) manage.py evaluate tests/golden

# pg_dump -Fc of DATABASE_URL, or of the embedded server (.data/pg) when it is unset, with
# pgserver's own client programs (RUNBOOK.md, "Backups").  make backup [FILE=path]
backup: install
	$(PY) -m ledgerly.backup dump $(FILE)

# pg_restore FILE into DATABASE_URL (or the embedded server), in one transaction, replacing what
# the dump holds.  make restore FILE=.data/backups/ledgerly-<time>.dump
restore: install
	@test -n "$(FILE)" || { echo "usage: make restore FILE=path/to/dump" >&2; exit 2; }
	$(PY) -m ledgerly.backup restore "$(FILE)"

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .data staticfiles .pytest_cache .mypy_cache .ruff_cache
