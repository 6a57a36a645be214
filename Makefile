# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Offline assets (weights, coco128 split, videos, the paper's logs) beside the checkout, unless set.
export LIPS_ASSETS ?= $(if $(wildcard ../shared/assets),$(abspath ../shared/assets))
DEMO   := runs/demo

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,lab]"
	rm -f $(VENV)/.installed-*
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The demo profile of params.yaml: Stage I on the authors' iter-01 (measured on train2017, so the val
# images that choose and report the result play no part in it), the paper-log replay, then the LIPS
# loop (4 iterations × 3 epochs at 320 on CPU) from the same base to 3.9 GFLOPs.
demo: $(STAMP)
	$(BIN)/lips sensitivity --weights lips_iter01_best.pt --data coco128.yaml --split train --imgsz 320 --batch 16 \
		--reference $(LIPS_ASSETS)/lips_paper/layer_importance.json --out $(DEMO)/sensitivity
	$(BIN)/lips replay-paper --out $(DEMO)/replay
	$(BIN)/lips optimize --params params.yaml --profile demo --out $(DEMO)/optimize \
		--set optimize.importance=$(DEMO)/sensitivity/layer_importance.json

clean:
	rm -rf runs/demo .pytest_cache
