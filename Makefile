# Two entry points for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMPLE := datasets/sample/rgbd_dataset_freiburg1_rpy
OUT := out/sample
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: run test lint install bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/slam run --source tum:$(SAMPLE) --sensor rgbd \
		--out $(OUT)/trajectory.txt --stats $(OUT)/stats.json --plot $(OUT)/trajectory.png

lint: $(STAMP)
	$(VENV)/bin/ruff check slam tests benchmarks
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(PY) -m pytest -n 2 --dist loadfile -q tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_matrix --runs 3 --out results
	$(PY) -m benchmarks.bench_ba --out results/ba.json
	$(PY) -m benchmarks.bench_place --out results/place.json
	$(PY) -m benchmarks.bench_loop --out results

clean:
	rm -rf $(VENV) .numba_cache out results
