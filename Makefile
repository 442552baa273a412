# watcher — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= var/demo

.PHONY: run test lint bench faults venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m watcher.demo $(DEMO)
	exec $(BIN)/watcher run --config config/demo.toml --data-dir $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check watcher tests bench faults
	$(BIN)/mypy --strict watcher
	$(BIN)/lint-imports

test: lint
	bash scripts/test-setup
	$(BIN)/pytest -q

bench: $(STAMP)
	bash scripts/test-setup
	$(BIN)/python -m bench

# The fault suite (README "Reliability"): not part of `make test`; exits 1 on any loss.
faults: $(STAMP)
	bash scripts/test-setup
	$(BIN)/python -m faults

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
