# fort-hub developer loop. The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv at the repo root if missing and installs what it needs from the registries.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fort-hub-installed

.PHONY: demo test lint format pytest install browser-deps bench clean help

help:
	@echo "make demo   - run the whole fort-hub platform on this machine (http://127.0.0.1:8000)"
	@echo "make test   - ruff (lint + format check) and the pytest suite"
	@echo "make bench  - run every benchmark in benchmarks/ and print figures"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the browser tests (playwright drives it; no browser download).
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "warning: /usr/bin/chromium is missing; browser tests will be skipped"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

pytest: $(STAMP) browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint pytest

demo: $(STAMP)
	$(VENV)/bin/fort-hub demo $(DEMO_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .fort-demo build *.egg-info .pytest_cache .ruff_cache
