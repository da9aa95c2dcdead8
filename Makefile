# Two entry points for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE := datasets/sample/rgbd_dataset_freiburg1_rpy
OUT := out/sample
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: run test lint install bench clean sysdeps

# Debian packages the full test suite needs: Chromium for the viewer's browser test,
# libusb for Open3D's wheel (the `dense` extra) and Vulkan on the CPU for its offscreen
# pictures (matplotlib otherwise). Installed only where missing (needs root
# or sudo); `make test` without them skips those tests locally (CI=true fails instead).
SYSDEPS := chromium libusb-1.0-0 libvulkan1 mesa-vulkan-drivers
sysdeps:
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		echo "installing$$missing"; \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The optional extras the full test suite exercises: training (torch, onnx) and dense
# maps (open3d). torch's CPU build is pinned first so that the `train` extra's range
# installs nothing more (an unpinned torch is a multi-GB CUDA build).
EXTRAS := $(VENV)/.extras
$(EXTRAS): $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,train,dense]'
	touch $(EXTRAS)

install: $(STAMP)

# `slam warmup` first: a fresh install compiles the Numba kernels there (about 30 s,
# once) instead of inside the timed replay; with a warm cache it takes a few seconds.
run: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/slam -q warmup --sensor rgbd
	$(VENV)/bin/slam run --source tum:$(SAMPLE) --sensor rgbd \
		--out $(OUT)/trajectory.txt --stats $(OUT)/stats.json --plot $(OUT)/trajectory.png

lint: $(STAMP)
	$(VENV)/bin/ruff check slam slam_protocol server clients tests benchmarks
	$(VENV)/bin/mypy

# Every test, as CI runs them, in an order shuffled by pytest-randomly: the seed is printed
# first (pytest -q hides the plugin's own line); `make test SEED=n` repeats an order.
# PYTEST_ARGS adds options: `make test PYTEST_ARGS='-m "not slow"'` is the fast subset.
PYTEST_ARGS ?=
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
test: $(STAMP) $(EXTRAS) lint
	@echo "test order: --randomly-seed=$(SEED)"
	$(PY) -m pytest -n 2 --dist loadfile -q --randomly-seed=$(SEED) $(PYTEST_ARGS) tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_matrix --runs 3 --out results
	$(PY) -m benchmarks.bench_speed --rounds 2 --out results
	$(PY) -m benchmarks.bench_ba --out results/ba.json
	$(PY) -m benchmarks.bench_place --out results/place.json
	$(PY) -m benchmarks.bench_loop --out results
	$(PY) -m benchmarks.bench_dense --out results
	$(PY) -m benchmarks.bench_service --out results/service.json

clean:
	rm -rf $(VENV) .numba_cache out results
