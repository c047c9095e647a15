# Two commands for a fresh machine: `make demo` runs the default experiment,
# `make test` runs the test suite. Both create or reuse .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.reglab-installed

.PHONY: demo test bench clean system-deps

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh "$(PY)" "$(VENV)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/reglab demo --out runs/demo

system-deps:
	bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
