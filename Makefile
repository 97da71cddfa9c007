# Two commands for a fresh machine (see README): `make run` and `make test`.
# Both create .venv from requirements.txt (and the project itself, editable) when it is missing or older.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: run test lint compare solvers-bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

run: $(VENV)/.installed
	$(PY) benchmarks/run.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m tests -q tests

# ruff, configured in pyproject.toml: the same check CI runs before the tests.
$(VENV)/.lint-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

lint: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

compare: $(VENV)/.installed
	$(PY) benchmarks/compare.py $(ARGS)

solvers-bench: $(VENV)/.installed
	$(PY) benchmarks/solver_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Every table behind README.md and benchmarks/README.md (benchmarks/tables.py; one command per table).
# Each runs only what is missing under benchmarks/results/runs/<table>/ (finished runs reused, a stopped one continued),
# then builds the CSV and plots: with every run committed, a scoring pass of minutes.
TABLES := headline-iid headline-dirichlet headline-iid-long headline-dirichlet-long sensitivity fleet methods methods-links scheduler-iid scheduler-dirichlet
.PHONY: results $(addprefix results-,$(TABLES))

results: $(addprefix results-,$(TABLES))

$(addprefix results-,$(TABLES)): results-%: $(VENV)/.installed
	$(PY) benchmarks/tables.py $(ARGS) $*
