# Two commands do all set-up on a fresh machine: `make test` and `make demo` (the library with all its extras). `make lab-deps` adds the browser that
# tests/test_lab.py drives JupyterLab in (Debian's chromium; .ci/run installs it too): without it that test skips,
# except in CI, where it fails.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Offline assets (weights, coco128 split, videos, the paper's logs) beside the checkout, unless set.
export LIPS_ASSETS ?= $(if $(wildcard ../shared/assets),$(abspath ../shared/assets))
DEMO   := runs/demo

.PHONY: install test test-fast demo rehearsal lab lab-deps docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,lab,docs,deploy]"
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The demo: `dvc repro` runs the five notebooks (dvc.yaml) on the demo profile of params.yaml —
# Stage I on the authors' iter-01 (on coco_val2193's fine-tune split, so the images that choose and report
# play no part in it), the schedule and paper-log replay, the LIPS loop to 3.7 GFLOPs (4 iterations × 1 epoch
# on half the fine-tune images at 320, with recovery, chosen on `val`, reported on the 1,000 `test` images,
# CPU), the benchmark and the video comparison. A second `dvc repro` finds everything up to date.
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# The paper profile at CPU scale (params.yaml profile `rehearsal`): the paper's code paths on every CI —
# yolo11n's shapes with BatchNorm (the authors' iter-01 inside yolo11n.yaml, built by `lips inflate`), the paper's
# recipe with warm-up, cost on the fused copy, coco_val2193 in Ultralytics' COCO layout — all five notebooks,
# into $(REHEARSAL)/ (runs) and $(REHEARSAL)/reports/. Minutes on 2 cores. On a GPU: make rehearsal SET=device=0
REHEARSAL ?= runs/rehearsal
SET       ?=
NOTEBOOKS := 01_sensitivity 02_schedule 03_optimize 04_benchmark 05_video_benchmark
rehearsal: $(STAMP)
	$(BIN)/lips inflate --weights lips_iter01_best.pt --data coco_val2193.yaml --out $(REHEARSAL)/yolo11n_iter01.pt
	for nb in $(NOTEBOOKS); do \
		PATH="$(abspath $(BIN)):$$PATH" $(BIN)/lips notebook $$nb --profile rehearsal --runs-dir $(REHEARSAL) \
			--reports-dir $(REHEARSAL)/reports --set base=$(REHEARSAL)/yolo11n_iter01.pt $(SET) || exit 1; \
	done

# JupyterLab on the notebooks, headless (open the printed URL). LAB_ARGS passes more options.
LAB_PORT ?= 8888
lab: $(STAMP)
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --port $(LAB_PORT) --notebook-dir notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Debian's Chromium, which tests/test_lab.py drives through Playwright (the dev extra) to run a notebook in JupyterLab.
# Not `playwright install`: it downloads its own browser, and these machines reach package registries only.
# As root, or through sudo; nothing to do once /usr/bin/chromium is there.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
lab-deps:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The documentation site (mkdocs.yml, docs/) into site/, offline, warnings as errors. The README's headline table is
# regenerated from reports/bench/baselines.json first; the Evidence tables, the CLI and API pages are generated
# by docs/hooks.py during the build.
docs: $(STAMP)
	$(BIN)/python tools/docs_tables.py --readme
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf site runs reports/notebooks reports/figures reports/tables reports/dvclive reports/sweeps .pytest_cache
