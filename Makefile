# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 is the CPU wheel on this machine; plain `pip install torch` pulls a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,sdp,ray,parquet]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/lipcert demo

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python benchmarks/bounds.py

clean:
	rm -rf $(VENV) build *.egg-info
