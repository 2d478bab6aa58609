# sdgen: the commands a user and CI need. `make run` and `make test` are all a new user needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup run test test-fast lint bench toy-models notebooks docs clean

# Create .venv and install the project with its test extras (idempotent: re-runs only when pyproject changes).
setup: $(STAMP)
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision pinned to the builds that work together here (README.md, "Install")
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# Run the demo job (configs/demo.yaml) into runs/demo, then print where the outputs are.
run: setup
	$(BIN)/sdgen run configs/demo.yaml $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -x --durations=15 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -x -m "not slow" $(PYTEST_ARGS)

# ruff check (line length 110 enforced) and ruff format --check: the whole tree is formatted
lint: setup
	$(BIN)/ruff check pipeline tests jobs benchmarks notebooks/execute.py
	$(BIN)/ruff format --check pipeline tests jobs benchmarks notebooks/execute.py

bench: setup
	$(BIN)/python -m benchmarks.bench_cpu
	$(BIN)/python -m benchmarks.bench_scale
	$(BIN)/python -m benchmarks.bench_gpu

# Train the toy-world models from scratch (deterministic, ~1 h on 2 CPU cores) and overwrite the shipped weights.
toy-models: setup
	$(BIN)/python -m pipeline.toyworld.training.train_all

# Execute notebooks/*.ipynb in place (offline, CPU) and store their outputs, so a reader on a code host sees
# the tables and images; commit the result. Each stays under 1.5 MB (notebooks/execute.py checks).
notebooks: setup
	$(BIN)/python notebooks/execute.py

# Regenerate docs/CONFIG.md from the config model's fields and comments (tests/core/test_config_doc.py
# fails when it is stale); written through a temp file so a failure leaves the old one in place.
docs: setup
	$(BIN)/python -m pipeline.core.config_doc > docs/CONFIG.md.tmp && mv docs/CONFIG.md.tmp docs/CONFIG.md

clean:
	rm -rf runs out .pytest_cache
