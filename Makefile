# taxifare pipelines — every task a user does is one target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
TAXIFARE := $(VENV)/bin/taxifare
PYTEST := $(PY) -m pytest

.PHONY: install system-packages doctor lint format run test test-e2e test-reliability test-containers audit bench bench-model bench-serve \
        compile tensorboard serve image push submit kind-up kind-down clean lock

install: $(STAMP)

# Idempotent: the venv is (re)built only when the lockfile or pyproject changes.
# Bytecode is compiled here, once: PYTHONDONTWRITEBYTECODE=1 is set on these machines (and in many
# images), so Python never caches it itself and every process would compile TensorFlow again
# (`import tensorflow` ~16 s instead of ~6 s). `make doctor` checks that it is there and current.
# Quiet: a few lines of progress, not one per package (uv's own errors still reach stderr).
$(STAMP): requirements.lock pyproject.toml
	@echo "install: $(VENV) from requirements.lock (first time ~1 min)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@$(UV) pip sync -q --compile-bytecode --python $(PY) requirements.lock
	@$(UV) pip install -q --compile-bytecode --python $(PY) --no-deps -e .
	@$(PY) -m compileall -q -j 0 trainer components pipelines
	@touch $(STAMP)
	@echo "install: done"

# The Debian packages the tests need (chromium, chromium-driver, shellcheck, nodejs): installed when
# missing, or one line naming them where nothing can be installed. The one list is in the script.
system-packages:
	@.ci/system-packages.sh

# Is the venv's bytecode compiled and current (tensorflow, kfp, aiplatform, …)? Exit 1 if not.
doctor: install
	$(PY) -m pipelines.doctor

lock:
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# ruff: the formatter and the linter, rules in pyproject.toml ([tool.ruff]).
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

run: install
	@$(TAXIFARE) run --local $(ARGS)

# The loop's suite (what the README's `make test` runs): everything but the long end-to-end runs,
# the load and fault-injection suites, the container build and the network audit.
test: install system-packages
	$(PYTEST) -m "not slow and not reliability and not containers and not network" $(ARGS)

# The long suites CI runs after `make test`: whole pipelines, sweeps, real browsers on real runs,
# fault injection and load.
test-e2e: install system-packages
	$(PYTEST) -m "(slow or reliability) and not containers and not network" $(ARGS)

test-reliability: install
	$(PYTEST) -m "reliability and not network" $(ARGS)

# pip-audit over the lockfile: needs PyPI's JSON API or OSV, which these machines cannot reach.
audit: install
	$(PYTEST) -m network $(ARGS)

test-containers: install
	$(PYTEST) -m containers $(ARGS)

# -- container image and cloud targets (see container/README.md) --------------------------------
# The configured repository tagged with the code's hash: exactly what `make compile` writes into the
# spec. `image` and `push` record what they built and pushed in build/image.json, which `taxifare
# submit` checks before it sends a spec naming that image.
IMAGE ?= $(shell $(PY) -m pipelines.cloud.image name)
TARGET ?= vertex

image: install
	IMAGE=$(IMAGE) container/build.sh
	$(PY) -m pipelines.cloud.image record built $(IMAGE)

push: image
	docker push $(IMAGE)
	$(PY) -m pipelines.cloud.image record pushed $(IMAGE)

submit: install
	$(TAXIFARE) submit --target $(TARGET) $(ARGS)

kind-up:
	IMAGE=$(IMAGE) container/kind-up.sh

kind-down:
	container/kind-down.sh

bench: install
	$(TAXIFARE) bench --out build/bench $(ARGS)

bench-model: install
	$(PY) -m pipelines.bench.model --out build/bench $(ARGS)

bench-serve: install
	$(PY) -m pipelines.bench.serve --out build/bench $(ARGS)

compile: install
	$(TAXIFARE) compile --out build/pipelines

LOGDIR ?= build/local/pipeline_root
tensorboard: install
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --host 127.0.0.1

clean:
	rm -rf build .pytest_cache
