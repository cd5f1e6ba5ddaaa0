# The two commands: `make demo` and `make test`. Each creates .venv when missing, installs
# torch first ($(TORCH_SPEC) from pip's configured index, unless the venv already has a torch;
# see README "Quick start" for which build that is), then the project in editable mode, then runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.adsys-installed
DEMO ?= demo
RUNS ?= runs
# `METHOD=pddpm make demo` trains and runs another method (runs/demo-pddpm).
METHOD ?= cddpm
DEMO_RUN ?= $(if $(filter cddpm,$(METHOD)),demo,demo-$(METHOD))
# A method trained as fold models trains FOLDS (`--folds`) and infers with their ensemble;
# icdm's demo: folds 0 and 9 (held-out task pairs {3, 4} and {0, 1}).
ifeq ($(METHOD),icdm)
FOLDS ?= 0,9
endif
# A latent method (conddiff, cldm) first trains its autoencoder (`aekl`, runs/demo-aekl),
# writes the demo shards' latents once with it (shards/out/demo-latents: 11x faster steps
# than encoding on the fly, bench/bench_latents.py) and trains on those.
ifneq ($(filter conddiff cldm,$(METHOD)),)
LATENTS := shards/out/demo-latents
PRETRAINED := $(LATENTS)/manifest.json
TRAIN_SETTINGS := --shards $(LATENTS) --set method_config.autoencoder_path=$(RUNS)/demo-aekl/export \
	--set method_config.latents_from_shards=true
endif
DEMO_MODEL := $(RUNS)/$(DEMO_RUN)$(if $(FOLDS),,/export)
DEMO_TRAINED := $(if $(FOLDS),$(RUNS)/$(DEMO_RUN)/ensemble.json,$(RUNS)/$(DEMO_RUN)/export/config.json)
# DeepSpeed JIT-builds small C++ ops once; keep them per checkout instead of per run.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.torch_extensions
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install test demo benchmark bench lint clean FORCE

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The demo, step by step; each step resumes or skips what is already done.
demo: $(STAMP) $(DEMO)/data/manifest.csv
	$(VENV)/bin/adsys preprocess $(DEMO)/data/manifest.csv --out $(DEMO)/preprocessed \
		--spacing 2 --shape 96 112 96
	$(PY) ray_jobs/build_shards.py shards/demo.yaml
	$(MAKE) $(DEMO_TRAINED)
	$(PY) ray_jobs/infer.py --model $(DEMO_MODEL) --cohort shards/out/demo \
		--out $(RUNS)/$(DEMO_RUN)/infer --threshold val-fpr=0.05
	$(PY) ray_jobs/benchmark.py leaderboard/floor.yaml --out $(RUNS)/$(DEMO_RUN)/floor \
		--add $(METHOD)=$(RUNS)/$(DEMO_RUN)/infer

$(DEMO)/data/manifest.csv: | $(STAMP)
	$(VENV)/bin/adsys demo-data --out $(DEMO)/data

# with folds, always re-run: it resumes unfinished folds and leaves finished ones as they are
$(DEMO_TRAINED): $(if $(FOLDS),FORCE) | $(STAMP) $(PRETRAINED)
	$(PY) ray_jobs/train.py --preset demo --method $(METHOD) --storage-path $(RUNS) \
		--name $(DEMO_RUN) $(if $(FOLDS),--folds $(FOLDS)) $(TRAIN_SETTINGS)

$(RUNS)/demo-aekl/export/config.json: | $(STAMP)
	$(PY) ray_jobs/train.py --preset demo --method aekl --storage-path $(RUNS) --name demo-aekl

# rewritten (--overwrite) whenever the autoencoder is newer than the latents
$(LATENTS)/manifest.json: $(RUNS)/demo-aekl/export/config.json | $(STAMP)
	$(VENV)/bin/adsys shards encode shards/out/demo --model $(RUNS)/demo-aekl/export \
		--out $(LATENTS) --pad-multiple 32 --overwrite

FORCE:

# every method's demo preset and every baseline on the demo cohort: runs/benchmark-demo
benchmark: $(STAMP) $(DEMO)/data/manifest.csv
	$(VENV)/bin/adsys preprocess $(DEMO)/data/manifest.csv --out $(DEMO)/preprocessed \
		--spacing 2 --shape 96 112 96
	$(PY) ray_jobs/build_shards.py shards/demo.yaml
	$(PY) ray_jobs/benchmark.py leaderboard/demo.yaml

bench: demo
	$(PY) -m pip install -e ".[dev,bench]"
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check adsys kernels ray_jobs tests bench

clean:
	rm -rf $(DEMO) $(RUNS) shards/out .pytest_cache
