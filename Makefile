# Two commands a newcomer needs: `make run` and `make test`. Each sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck install system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

# Debian and npm packages the tests need (.ci/debian-packages, tests/node); see the script.
system-deps:
	.ci/install-system-deps

DATA_DIR ?= data

run: $(STAMP)
	@test -f $(DATA_DIR)/config.toml || $(BIN)/clientregistry init --data-dir $(DATA_DIR)
	$(BIN)/clientregistry serve --data-dir $(DATA_DIR)

demo: $(STAMP)
	$(BIN)/clientregistry demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
