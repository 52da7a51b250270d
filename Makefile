# Two commands matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
# Prefect keeps its database (the runs `make ui` shows) in the project, not in ~/.prefect.
export PREFECT_HOME := $(CURDIR)/.prefect
PREFECT_SERVER_URL ?= http://127.0.0.1:4200/api

.PHONY: install data demo test lint bench sample pipeline schedule ui serve serve-bento package monitor dashboard \
	annotate-install annotate annotate-user
PORT ?= 3000

# Label Studio, the annotation tool, lives in its own venv: its Django/pydantic pins stay out of
# ours (our code only talks to its REST API). LS_DATA holds its database, users and projects.
LS_VENV := .venv-ls
LS_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)
LS_PORT ?= 8080
LS_DATA ?= $(CURDIR)/.label-studio
# No update check against the package index and no usage analytics (no network at run time).
LS_ENV := LABEL_STUDIO_LATEST_VERSION_CHECK=false LABEL_STUDIO_COLLECT_ANALYTICS=false

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (torch + the MLOps stack: first time about 5 minutes, ~8 GB)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Restore data/ from the DVC remote bundled in the repo (offline, content-addressed).
data: $(STAMP)
	dvc pull --quiet data.dvc

# Ends by committing what git tracks of the run (dvc.lock, metrics/, plots/, reports/: nothing
# else) as "make demo: results", so git status is clean and dvc metrics diff / dvc exp show
# have a baseline; undo with git reset HEAD~1.
demo: data
	python -m flows.pipeline
	python -m flows.commit_results --message "make demo: results"
	@echo
	@echo "== outputs =="
	@for d in $$(python -c "from emotions.config import load_params; print(' '.join(load_params().datasets))"); do \
	  echo "dataset $$d:"; \
	  echo "  manifest     artifacts/$$d/manifest.parquet"; \
	  echo "  quarantine   artifacts/$$d/quarantine.csv"; \
	  echo "  annotations  artifacts/$$d/annotation_stats.json"; \
	  echo "  validation   artifacts/$$d/validation/result.json"; \
	  echo "  data docs    artifacts/$$d/validation/data_docs/index.html"; \
	  echo "  variants     artifacts/$$d/variants/{full,balanced,test}/split.parquet"; \
	  echo "  cache        artifacts/$$d/cache/ (frames.npy, fbank.npy, index.parquet, stats.json)"; \
	done
	@echo "models         artifacts/models/<dataset>/<variant>/ (best.pt, last.pt, model.json, dvclive/)"
	@echo "metrics        $$(ls metrics/*/*.json | tr '\n' ' ')"
	@echo "plots          $$(ls plots/*/*/confusion.png | tr '\n' ' ')"
	@echo "reports        reports/results.md reports/ablation.md"
	@echo "bento          $$(cat artifacts/bento.txt 2>/dev/null) (artifacts/bento.txt; serve it with: make serve)"
	@echo "prefect runs   .prefect/ (see them with: make ui)"
	@echo
	@cat reports/results.md
	@echo
	@echo "(dvc metrics show, dvc plots show, dvc exp show: the same numbers, curves and plots through DVC;"
	@echo " dvc.lock, metrics/, plots/ and reports/ are committed, so dvc metrics diff and dvc exp diff compare against them)"
	@dvc status

# The DAG through Prefect, one task per DVC stage; e.g. make pipeline ARGS="--targets train --force"
pipeline: data
	python -m flows.pipeline $(ARGS)

# The Prefect UI and scheduler on http://127.0.0.1:4200 (earlier `make demo` runs show up too).
ui: $(STAMP)
	prefect server start

# Serve the three deployments (flows/deployments.py): pipeline (on demand), retrain
# (flow.retrain_cron and every drift event), monitor (flow.monitor_cron); needs `make ui` running.
schedule: $(STAMP)
	@python -c "import urllib.request; urllib.request.urlopen('$(PREFECT_SERVER_URL)/health', timeout=5)" 2>/dev/null \
	  || { echo "no Prefect server at $(PREFECT_SERVER_URL): run 'make ui' in another terminal first"; exit 1; }
	@python -m flows.deployments --repo . --list
	PREFECT_API_URL=$(PREFECT_SERVER_URL) python -m flows.deployments --repo .

# The BentoML service on http://127.0.0.1:$(PORT) with the model of serve.run (run `make demo` first).
serve: $(STAMP)
	emotions serve --port $(PORT)

# Serve the packaged Bento (artifacts/bento.txt names it); a BentoML store that lacks it (a fresh
# machine, or after `dvc checkout` of another experiment) gets it from artifacts/bento.tar.gz.
serve-bento: $(STAMP)
	@tag=$$(cat artifacts/bento.txt); \
	  bentoml get "$$tag" >/dev/null 2>&1 || bentoml import artifacts/bento.tar.gz; \
	  bentoml serve "$$tag" --port $(PORT)

# Build the Bento (model + code) into the local BentoML store; the tag goes to artifacts/bento.txt.
package: $(STAMP)
	dvc repro package

# Evidently drift of the prediction log against the validation clips. On drift: with
# PREFECT_API_URL set, emits emotions.drift.detected (the served retrain deployment picks it
# up); without, runs the retrain flow here. ARGS="--on-drift report" only reports.
monitor: $(STAMP)
	python -m flows.monitor --repo . $(ARGS)

# The Evidently UI over every monitor run (http://127.0.0.1:8000, project emotions-drift).
dashboard: $(STAMP)
	evidently ui --workspace artifacts/monitor/workspace --port 8000

# Label Studio into .venv-ls (about 2 minutes, ~1 GB), then a migrated empty database in
# .venv-ls/template: a fresh server (the tests start one) copies it instead of running
# Label Studio's ~200 migrations (a minute on 2 cores).
annotate-install: $(LS_STAMP)

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'label-studio==$(LS_VERSION)'
	rm -rf $(LS_VENV)/template
	$(LS_ENV) LABEL_STUDIO_BASE_DATA_DIR=$(CURDIR)/$(LS_VENV)/template \
	  $(LS_VENV)/bin/label-studio version > /dev/null 2>&1
	@touch $@

# Label Studio on http://127.0.0.1:$(LS_PORT), serving local files below the repository (the
# queue folder, data/) to the labeling page. First time: make annotate-user (your login + token).
# A new LS_DATA starts from the migrated template instead of migrating.
annotate: $(LS_STAMP)
	@test -f $(LS_DATA)/label_studio.sqlite3 || { mkdir -p $(LS_DATA) && cp $(LS_VENV)/template/label_studio.sqlite3 $(LS_DATA)/; }
	$(LS_ENV) LABEL_STUDIO_BASE_DATA_DIR=$(LS_DATA) \
	LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=$(CURDIR) \
	  $(LS_VENV)/bin/label-studio start --no-browser --internal-host 127.0.0.1 --port $(LS_PORT)

# A Label Studio login (EMAIL, PASSWORD) whose API token is $$LABEL_STUDIO_API_KEY (what
# `emotions queue push|pull` send); the first user also creates the organization.
annotate-user: $(LS_STAMP)
	@test -n "$${LABEL_STUDIO_API_KEY:-}" || { echo "set LABEL_STUDIO_API_KEY (any string of 6+ characters) first"; exit 1; }
	@test -n "$(EMAIL)" -a -n "$(PASSWORD)" || { echo "usage: make annotate-user EMAIL=you@example.com PASSWORD=..."; exit 1; }
	@test -f $(LS_DATA)/label_studio.sqlite3 || { mkdir -p $(LS_DATA) && cp $(LS_VENV)/template/label_studio.sqlite3 $(LS_DATA)/; }
	@$(LS_ENV) LABEL_STUDIO_BASE_DATA_DIR=$(LS_DATA) $(LS_VENV)/bin/label-studio init --username '$(EMAIL)' \
	  --password '$(PASSWORD)' --user-token "$$LABEL_STUDIO_API_KEY" --enable-legacy-api-token > /dev/null
	@echo "user $(EMAIL) can log in at http://127.0.0.1:$(LS_PORT); its API token is \$$LABEL_STUDIO_API_KEY"

test: $(STAMP) $(LS_STAMP)
	ruff check .
	python -m pytest -q

lint: $(STAMP)
	ruff check .
	ruff format --check .

bench: data
	dvc repro preprocess@emotions
	python benchmarks/loader.py --root data --variants artifacts/emotions/variants --cache artifacts/emotions/cache
	python benchmarks/model.py
	python benchmarks/train.py

# Regenerate the bundled sample corpus and push it into the in-repo DVC remote.
sample: $(STAMP)
	rm -rf data
	emotions synth data
	dvc add data
	dvc push data.dvc
