# Two commands a newcomer needs: `make run` and `make test`. Each sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck install system-deps bench clean translations

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

# The web UI's message catalogues: extract the strings of its templates and modules, merge them
# into each language's .po (translate the new, empty entries there), compile the .mo files.
UI_LOCALE := src/clientregistry/ui/locale
translations: $(STAMP)
	$(BIN)/pybabel extract -F src/clientregistry/ui/babel.cfg -k _ -k N_ -k gettext \
		-k ngettext:1,2 --no-location --sort-output --project=clientregistry \
		-o $(UI_LOCALE)/messages.pot .
	$(BIN)/pybabel update -i $(UI_LOCALE)/messages.pot -d $(UI_LOCALE) -D messages \
		--no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d $(UI_LOCALE) -D messages --statistics

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
