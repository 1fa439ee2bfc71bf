# Two commands on a fresh clone:   make bench   (set up, then the main job)
#                                  make test    (set up, then the whole test suite)
# Setup is idempotent: it reruns only when a pyproject.toml or this file changed.

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.harmkit-setup
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
SETUP_INPUTS := pyproject.toml $(PLUGINS) Makefile

.PHONY: setup bench test test-quick lint clean-venv

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel versioneer
	# neuroHarmonize needs numpy<2; pyradiomics must see numpy at build time.
	$(PIP) install -q "numpy>=1.24,<2"
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation "pyradiomics>=3.0.1"
	$(PIP) install -q --no-build-isolation -e ".[test]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

# The main job: simulate the head-and-neck cohort (cached), benchmark, report in harmkit-runs/bench-headneck/.
bench: setup
	$(VENV)/bin/harmkit bench --methods gan,combat,gan+combat

test: setup lint
	$(PY) -m pytest -ra

# Style, types and architecture (import-linter: no import cycle, data flows one way, no torch in core).
lint: setup
	$(VENV)/bin/ruff check harmkit plugins tests benchmarks
	$(VENV)/bin/ruff format --check harmkit plugins tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The quick subset: everything but the end-to-end tests marked slow.
test-quick: setup
	$(PY) -m pytest -ra -m "not slow"

clean-venv:
	rm -rf $(VENV)
