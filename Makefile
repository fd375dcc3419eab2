# carousel-gateway: `make run` starts the gateway on its embedded simulators;
# `make test` installs everything the tests need and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/carousel-gateway serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# Extra things some tests need (Node packages, a legacy websockets venv, Debian packages):
# each included file adds its own prerequisite targets to TEST_DEPS.
TEST_DEPS :=
-include tests/*/deps.mk

test: $(STAMP) $(TEST_DEPS)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
