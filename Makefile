# Two commands for a new user: `make demo` and `make test`. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
INSTALLED := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
VARIANT ?= cpu
# Test files run in parallel, one file per worker at a time (its module fixtures stay shared):
# much of a test's time is single-threaded (interpreter start-up, imports, tiny TF ops).
PYTEST_WORKERS ?= 2
IMAGE ?= $(or $(OASIS_VQVAE_IMAGE),ghcr.io/oasis-vqvae/oasis-vqvae:$(VERSION)$(if $(filter gpu,$(VARIANT)),-gpu))
# The image's base: the official Python image, or LOCAL_BASE (make image-base) offline.
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE := localhost/oasis-vqvae-base:bookworm-py3.11
# Options of benchmarks/quality.py, e.g. make quality QUALITY_ARGS="--size 128 --subjects 60"
QUALITY_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-image lint format ui bench quality lock image image-base \
	image-gpu-check pipeline clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed; run: make PYTHON=python3.11 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --constraint constraints.txt --compile-bytecode \
		--editable '.[dev]'
	@touch $@

install: $(INSTALLED) ## create .venv and install the project with its locked dependencies

demo: $(INSTALLED) ## run the whole pipeline (dvc repro) on the built-in synthetic data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc metrics show
	@echo
	@echo "Outputs:"
	@echo "  dataset       data/dataset/         manifest.json + TFRecord shards per split"
	@echo "  VQ-VAE        models/vqvae/         vqvae.keras, loss_curves.png, reconstructions.png"
	@echo "  codes         data/codes/           integer code grids per split, usage.png"
	@echo "  PixelCNN      models/pixelcnn/      pixelcnn.keras, conditions.json, loss_curves.png"
	@echo "  samples       outputs/samples/      sample_NNNN.png, grid.png, labels.csv, dataset/"
	@echo "  evaluation    outputs/eval/         metrics.json, report.html, samples_by_level.png and more figures"
	@echo "  utility       outputs/utility/      metrics.json, report.html, utility_curve.png"
	@echo "  MLflow runs   make ui, then open http://127.0.0.1:5000"

test: $(INSTALLED) ## run the test suite (all but the image tests) on PYTEST_WORKERS processes
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test-image: $(INSTALLED) ## build the image (if changed) and run the tests in it (needs docker or podman)
	$(BIN)/python -m pytest -m image

lint: $(INSTALLED) ## ruff checks
	$(BIN)/ruff check src tests benchmarks pipelines components
	$(BIN)/ruff format --check src tests benchmarks pipelines components

format: $(INSTALLED) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks pipelines components
	$(BIN)/ruff format src tests benchmarks pipelines components

ui: $(INSTALLED) ## start the MLflow UI on the local tracking store (http://127.0.0.1:5000)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
		--backend-store-uri sqlite:///mlflow/mlflow.db \
		--default-artifact-root "$(CURDIR)/mlflow/artifacts" \
		--serve-artifacts --artifacts-destination mlflow/artifacts \
		--host 127.0.0.1 --port 5000 --workers 1

bench: $(INSTALLED) ## run the speed benchmarks (each prints a ratio against its baseline)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/prior_throughput.py
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/nearest_neighbours.py
	$(BIN)/python benchmarks/diversity.py
	$(BIN)/python benchmarks/startup.py

quality: $(INSTALLED) ## whole pipeline on 150 x 24 synthetic 256-px slices, params/oasis.yaml: time and quality (QUALITY_ARGS=...)
	$(BIN)/python benchmarks/quality.py $(QUALITY_ARGS)

lock: ## re-resolve constraints.txt from pyproject.toml (then commit it)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra cuda --extra vertex --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-header --quiet --output-file constraints.txt

image: ## build the components' image (VARIANT=cpu|gpu, IMAGE=tag, BASE_IMAGE=base; docker or podman)
	components/image.sh build $(IMAGE) $(VARIANT) $(BASE_IMAGE)

image-base: ## make LOCAL_BASE, a Debian bookworm + Python 3.11 base, with debootstrap (as root)
	components/image.sh base $(LOCAL_BASE)

image-gpu-check: $(INSTALLED) ## prove the GPU variant's dependencies resolve within constraints.txt
	$(BIN)/python -m pytest -m image tests/kfp/test_image_lock.py

pipeline: $(INSTALLED) ## compile the Kubeflow pipeline to outputs/pipeline.yaml (image: IMAGE)
	OASIS_VQVAE_IMAGE=$(IMAGE) $(BIN)/python -m pipelines compile --output outputs/pipeline.yaml

clean: ## remove generated data, models and outputs (keeps .venv and the MLflow store)
	rm -rf data models outputs
