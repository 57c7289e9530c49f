# Every target creates .venv on first use; `make setup` is idempotent and quick once done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint format demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# The main job on the embedded default: all PaI criteria on digits/mlp; prints summary.md.
# Re-running resumes: finished runs are skipped (delete demo-out/ to start over).
demo: setup
	$(BIN)/curvprune sweep --config benchmarks/configs/demo.yaml --out demo-out

bench: setup
	$(BIN)/python benchmarks/bench_curvature.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

# The claims ledger (docs/claims.md): runs every claim's sweeps (resumable), copies the rows to
# docs/claims/ and rebuilds the document; `benchmarks/claims.py --report-only` only rebuilds it.
.PHONY: claims
claims: setup
	$(BIN)/python benchmarks/claims.py
