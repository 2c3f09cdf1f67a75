# make repro: set up the environment if needed, then run the whole DVC pipeline (dvc repro).
# make test:  set up the environment if needed, then run pytest and nbval over every notebook.
# make data:  download, verify and prepare the datasets of PROFILE (default: paper = every paper_*
#             profile of params_paper.yaml) into data/, then record them in data.dvc (dvc add data).
# make env TORCH_INDEX=https://download.pytorch.org/whl/cpu   (or .../whl/cu126, ...): take torch and
#             torchvision (the versions pinned in pyproject.toml) from that index: a CPU-only build, or
#             one for an older CUDA driver (docs/install.md).
PYTHON ?= python3
TORCH_INDEX ?=
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: env repro test bench gpu-check clean data

PROFILE ?= paper

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) $$(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"'))
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest tests
	python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

data: $(STAMP)
	python -m gradmix.prepare --profile $(PROFILE)
	dvc add data

bench: $(STAMP)
	python bench/bench.py

gpu-check: $(STAMP)  ## on a CUDA machine, <= 8 min: cuda tests, step benchmark, real epochs -> results/bench_cuda.json
	python bench/gpu_check.py

clean:
	rm -rf runs results .dvc/cache .dvc/tmp
