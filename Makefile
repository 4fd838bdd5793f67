# Two commands on a fresh machine: `make demo` and `make test` (both create .venv if needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xtrieve-installed
# torch==2.13.0 resolves to a CPU build on the project's machines; elsewhere any torch will do.
TORCH_PIN ?= torch==2.13.0
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)" || $(BIN)/python -m pip install -q torch
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo_index
	$(BIN)/xtrieve build demo_index --corpus examples/sample_corpus.jsonl
	$(BIN)/xtrieve info demo_index
	$(BIN)/xtrieve search demo_index "how do vaccines protect us?" -k 5
	$(BIN)/xtrieve search demo_index "planets and stars" -k 3 --filter "year >= 2019"

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) demo_index build *.egg-info .pytest_cache
