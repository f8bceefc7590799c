# Two commands do all the set-up: `make example` (the main job) and `make test`.
# Both create .venv and install the suite into it on first use (see README.md, "Install").
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install example test clean-example

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(BIN)/.installed

example: install
	PATH="$(abspath $(BIN)):$$PATH" bash examples/run_toy.sh

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

clean-example:
	rm -rf example
