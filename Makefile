# make repro: set up the environment if needed, then run the whole DVC pipeline (dvc repro).
# make test:  set up the environment if needed, then run pytest and nbval over every notebook.
# make data:  download, verify and prepare the datasets of PROFILE (default: paper = every paper_*
#             profile of params_paper.yaml) into data/, then record them in data.dvc (dvc add data).
# make check-results: clone HEAD into a temporary folder, run the whole pipeline there from scratch
#             (dvc repro, no cache, no checkpoints) and compare its results/metrics.json with the committed
#             one within gradmix.reproduce.TOLERANCE (docs/reproducibility.md); exit 1 if not reproduced.
# make env TORCH_INDEX=https://download.pytorch.org/whl/cpu   (or .../whl/cu126, ...): take torch and
#             torchvision (the versions pinned in pyproject.toml) from that index: a CPU-only build, or
#             one for an older CUDA driver (docs/install.md).
PYTHON ?= python3
TORCH_INDEX ?=
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: env repro test bench clean data check-results

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

check-results: $(STAMP)
	dir=$$(mktemp -d -t gradmix-check-XXXXXX) && echo "fresh clone of HEAD in $$dir/repo" && \
	git clone -q . $$dir/repo && git show HEAD:results/metrics.json > $$dir/reference.json && \
	(cd $$dir/repo && dvc repro) && \
	python -m gradmix check-results $$dir/repo/results/metrics.json $$dir/reference.json

bench: $(STAMP)
	python bench/bench.py

clean:
	rm -rf runs results .dvc/cache .dvc/tmp
