# corral developer tasks. `make help` lists them; .ci/run runs `make test` with CI=true.

PYTHON ?= python3
PYTEST_ARGS ?=

VENV := .venv
BIN := $(VENV)/bin
# Installs `-e .[test,fast]` into the venv; remade when pyproject.toml changes.
STAMP := $(VENV)/.stamp-install
# Only the directories that exist: ruff fails on a path that does not.
LINT_PATHS := $(wildcard src tests benchmarks examples)

.DEFAULT_GOAL := help
.PHONY: help venv debs demo lint typecheck test bench-quick clean distclean

help:
	@echo "make venv         create .venv and install corral -e .[test,fast] (PYTHON=$(PYTHON), >= 3.11)"
	@echo "make debs         install the Debian packages in scripts/debian-packages.txt"
	@echo "make demo         run corral demo"
	@echo "make lint         ruff check + ruff format --check + no import cycle in src/corral"
	@echo "make typecheck    mypy (strict on src/)"
	@echo "make test         debs, lint, typecheck, then pytest (PYTEST_ARGS=...)"
	@echo "make bench-quick  install the bench extra (Ray Serve), run every benchmarks/*.py with --quick"
	@echo "make clean        remove caches and build outputs; distclean also removes .venv"

venv: $(STAMP)

# The interpreter check looks at the venv's python when the venv exists, else at $(PYTHON).
$(STAMP): pyproject.toml
	@py=$(PYTHON); [ -x $(BIN)/python ] && py=$(BIN)/python; \
	if ! command -v "$$py" >/dev/null; then \
	  echo "make venv: $$py not found; set PYTHON to a Python >= 3.11" >&2; exit 1; fi; \
	"$$py" -c "import sys; sys.exit(sys.version_info < (3, 11))" || { \
	  echo "make venv: corral needs Python >= 3.11; $$py is $$("$$py" -V 2>&1)." >&2; \
	  echo "           Set PYTHON=python3.11 (or newer); remove $(VENV) if it was made with an older one." >&2; \
	  exit 1; }
	@[ -x $(BIN)/python ] || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip || echo "make venv: warning: could not upgrade pip; continuing"
	@echo "installing corral -e .[test,fast] into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e ".[test,fast]"
	@# Benchmark data (benchmarks/train.py): river ships the Shuttle stream; recbole ships
	@# MovieLens 100K, read from its install path (--no-deps: only the data is used).
	@$(BIN)/python -m pip install --quiet river && $(BIN)/python -m pip install --quiet --no-deps "recbole==1.2.1"
	@touch $@

debs:
	@bash scripts/ensure-debian-packages.sh scripts/debian-packages.txt

demo: venv
	$(BIN)/corral demo

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/python scripts/import_cycles.py --lazy

typecheck: venv
	$(BIN)/mypy

# pytest exits with 5 when it collects no tests (a fresh project, or PYTEST_ARGS that select
# nothing). That is not a failure of the code, so it passes here, with a line that says so;
# this is the one place that decides it (.ci/run just runs `make test`).
test: venv debs lint typecheck
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); not a failure"; rc=0; fi; \
	exit $$rc

# Files whose name starts with "_" are helpers, not benchmarks.
bench-quick: venv
	@$(BIN)/python -m pip install --quiet -e ".[test,fast,bench]"
	@found=0; for f in benchmarks/*.py; do \
	  [ -e "$$f" ] || continue; case "$${f##*/}" in _*) continue;; esac; \
	  found=1; echo "== $$f --quick"; $(BIN)/python "$$f" --quick || exit $$?; \
	done; [ $$found -eq 1 ] || echo "bench-quick: no benchmarks/*.py yet"

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name "*.egg-info" \) -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
