# gradmix: `make help` lists every target (the text after `##` on its line).
# Variables: PYTHON (the interpreter make env uses), TORCH_INDEX (a PyTorch wheel index for make env:
# a CPU-only build, or one for an older CUDA driver; docs/install.md), PROFILE (what make data fetches).
PYTHON ?= python3
TORCH_INDEX ?=
PROFILE ?= paper
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

# What `make clean` removes: the pipeline's outputs that git does not track (trained runs, executed
# notebooks, figures, the per-run table, dvc plots output, DVC's temporary files). Committed results
# (results/metrics.json, summary.json, tables, robustness, ood/corruption json, plots/*.csv, bench.json),
# dvc.lock and docs/img are never touched: `git clean` removes untracked files only.
PIPELINE_OUTPUTS := runs results/notebooks results/figures results/runs.csv dvc_plots .dvc/tmp

.DEFAULT_GOAL := help
.PHONY: help env repro test bench gpu-check data readme-figures check-results clean clean-checkpoints

help:  ## list the targets
	@echo "gradmix: make <target> [VARIABLE=value]"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Entry points beyond make: gradmix --help (train, evaluate, download, config; docs/cli.md),"
	@echo "examples/*.py (a new mixer, your own model, your own images; docs/extending.md)."

env: $(STAMP)  ## create .venv and pip install -e '.[test]' (TORCH_INDEX=<url>: torch from that index)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) $$(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"'))
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)  ## run the whole pipeline (dvc repro) on the embedded default: results/, figures, tables
	dvc repro

test: $(STAMP)  ## pytest, then nbval over every notebook (what CI runs)
	python -m pytest tests
	python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

bench: $(STAMP)  ## time each method's train step against ERM: results/bench.json
	python bench/bench.py

data: $(STAMP)  ## download and verify the datasets of PROFILE (default: every paper profile), then dvc add data
	python -m gradmix.prepare --profile $(PROFILE)
	dvc add data

readme-figures: $(STAMP)  ## after make repro: results/figures/ce/{metrics,gallery}.png -> docs/img (small PNGs for the README)
	python -c "from PIL import Image; [Image.open(f'results/figures/ce/{n}.png').convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(f'docs/img/{n}.png', optimize=True) for n in ('metrics', 'gallery')]"

check-results: $(STAMP)  ## clone HEAD, run the whole pipeline there from scratch, compare metrics.json with the committed one (docs/reproducibility.md)
	dir=$$(mktemp -d -t gradmix-check-XXXXXX) && echo "fresh clone of HEAD in $$dir/repo" && \
	git clone -q . $$dir/repo && git show HEAD:results/metrics.json > $$dir/reference.json && \
	(cd $$dir/repo && dvc repro) && \
	python -m gradmix check-results $$dir/repo/results/metrics.json $$dir/reference.json

gpu-check: $(STAMP)  ## on a CUDA machine, <= 8 min: cuda tests, step benchmark, real epochs -> results/bench_cuda.json
	python bench/gpu_check.py

clean:  ## remove untracked pipeline outputs (runs/, executed notebooks, figures, dvc_plots/); keeps checkpoints/
	git clean -fdxq -- $(PIPELINE_OUTPUTS)

clean-checkpoints:  ## remove checkpoints/ (resumable checkpoints and copies of finished runs: hours of training)
	rm -rf checkpoints
