# mmer-bench: `make bench` runs the embedded synthetic corpus, `make test` the tests.
# Targets install what they need into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATASET ?= synthetic
DATA_ROOT ?=
METHODS ?=
ENCODER ?=
OUT ?= runs/$(DATASET)
BENCH_ARGS ?=
# where the jobs run: local (a pool of JOBS processes; JOBS=1 runs them one after another) or slurm
LAUNCHER ?= local
JOBS ?= 1
ROBUSTNESS ?= 1
# more options of the robustness step, e.g. ROBUSTNESS_ARGS="--partition gpu --time 30" with LAUNCHER=slurm
ROBUSTNESS_ARGS ?=
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: setup bench test lint clean

setup: $(VENV)/.installed

# torch first (the CPU build here, or whatever build your machine has), then the package
# constrained to that torch so nothing pulls a second, CUDA-sized torch.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt torch
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $@

bench: setup
	$(PY) -m mmer_bench.cli bench $(DATASET) --out $(OUT) --publish leaderboard --launcher $(LAUNCHER) --jobs $(JOBS) \
		$(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(if $(METHODS),--methods $(METHODS)) \
		$(if $(ENCODER),--encoder $(ENCODER)) $(BENCH_ARGS)
	$(if $(filter 1,$(ROBUSTNESS)),$(PY) -m mmer_bench.cli robustness $(OUT) --publish leaderboard \
		--launcher $(LAUNCHER) --jobs $(JOBS) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ROBUSTNESS_ARGS))

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check mmer_bench tests benchmarks
	$(VENV)/bin/ruff format --check mmer_bench tests benchmarks || true

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
