# `make demo` and `make test` set themselves up: they create .venv and install beatgans into it when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.beatgans-installed
# torch as pinned by this machine's pip configuration (resolves from local files here); pyproject keeps ranges.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: demo test lint install wheel clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Train a class-conditional ADM UNet on the bundled digits (a few minutes on 2 CPU cores), then sample a
# DDIM grid with one row per digit class. Prints where the grid, the checkpoint and the wandb run are.
# PASSIVE keeps idle OpenMP threads from spinning: on a busy CPU, spinning threads slowed a step 20x.
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/beatgans-train experiment=digits/ddpm

test: $(STAMP)
	OMP_NUM_THREADS=1 WANDB_MODE=offline $(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

# ruff as configured in pyproject.toml ([tool.ruff]): pyflakes, pycodestyle, import order, bugbear.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests experiments benchmarks

# dist/beatgans-<version>-py3-none-any.whl, configs included (docs/install.md): `pip install` it anywhere.
# build/ is cleared first so that no file deleted from src/ can linger in the wheel.
wheel: $(STAMP)
	rm -rf build
	$(PY) -m pip wheel --no-deps -w dist .

clean:
	rm -rf logs outputs multirun .pytest_cache
