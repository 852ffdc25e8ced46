# zoo: `make train-<model>` trains on TFDS, evaluates and exports; `make test` runs the tests.
# The first target run creates .venv from pyproject.toml.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The server's venv: the runtime and KServe, no TensorFlow (kserve pins protobuf<7 and psutil<6, which
# the test venv's Jupyter kernel and tritonclient refuse)
SERVE_VENV := .venv-serve
MODELS := rnn lstm transformer gan vae pixelcnn wavenet diffusion
# Extra arguments for the zoo command, e.g. make train-rnn ARGS="--set epochs=2"
ARGS ?=

# On the zoo's build machines the prepared TFDS data sits beside the checkout; elsewhere TFDS
# uses $TFDS_DATA_DIR or its own default folder (and downloads what is missing).
SHARED_TFDS := $(abspath ../shared/tfds)
ifeq ($(TFDS_DATA_DIR),)
ifneq ($(wildcard $(SHARED_TFDS)),)
export TFDS_DATA_DIR := $(SHARED_TFDS)
endif
endif

.PHONY: venv docs serve-venv serve bench-serve test test-large bench list clean triton web serve-web train-classifier train-audio-classifier $(addprefix train-,$(MODELS)) \
        $(addprefix eval-,$(MODELS)) $(addprefix export-,$(MODELS)) $(addprefix sample-,$(MODELS))

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"  # 77: the SPDX license field (tests build the wheel without isolation)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e ".[serve]"
	touch $@

serve-venv: $(SERVE_VENV)/.installed

# The exports behind KServe's model server on 127.0.0.1: REST (v2, /openai/v1) on 8080, gRPC on 8081.
# make serve ARGS="--http-port 9000 --grpc-port 9001 --models gan,transformer"
serve: serve-venv
	$(SERVE_VENV)/bin/python -m zoo.serve exports $(ARGS)

# The server under load, its variants side by side: benchmarks/serve.md and serve.jsonl (about 12 minutes)
bench-serve: venv serve-venv
	ZOO_COMMAND='make bench-serve$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) benchmarks/serve_load.py $(ARGS)

list: venv
	$(PY) -m zoo list

$(addprefix train-,$(MODELS)): train-%: venv
	ZOO_COMMAND='make train-$*$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo train $* $(ARGS)

$(addprefix eval-,$(MODELS)): eval-%: venv
	ZOO_COMMAND='make eval-$*$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo eval $* $(ARGS)

$(addprefix export-,$(MODELS)): export-%: venv
	ZOO_COMMAND='make export-$*$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo export $* $(ARGS)

$(addprefix sample-,$(MODELS)): sample-%: venv
	$(PY) -m zoo sample $* $(ARGS)

# The image models' judge (FID features, class accuracy): exports/classifiers/<dataset>/
train-classifier: venv
	ZOO_COMMAND='make train-classifier$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo.metrics.classifier --dataset mnist $(ARGS)

# wavenet's judge: a spoken-digit classifier scored on the held-out speaker
train-audio-classifier: venv
	ZOO_COMMAND='make train-audio-classifier$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo.metrics.audio_classifier $(ARGS)

# A Triton Inference Server model repository from exports/ (python -m zoo triton --help)
triton: venv
	$(PY) -m zoo triton --out triton $(ARGS)

# The browser page (web/): its npm packages (onnxruntime-web, pinned by web/package-lock.json),
# then a loopback server for the page and exports/: open http://127.0.0.1:8000/web/
web: web/node_modules/.package-lock.json

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --ignore-scripts

serve-web: web
	$(PYTHON) web/serve.py $(ARGS)

test: venv serve-venv
	$(PY) -m pytest

# Slow tests on the real data in $(TFDS_DATA_DIR).
test-large: venv
	$(PY) -m pytest -m large

# Speed of the exports: each model's figures to benchmarks/<model>.json, then README.md's tables from them
bench: venv
	ZOO_COMMAND='make bench$(if $(ARGS), ARGS="$(ARGS)",)' $(PY) -m zoo.bench $(ARGS)
	$(PY) -m zoo.bench --readme

# The documentation site in site/ (mkdocs build --strict: broken links and pages left out of the nav fail)
docs: venv
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache site
