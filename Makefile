# dkd-tune: `make install` builds .venv (PyTorch from this machine's disk), `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install dataset browser test lint demo bench bench-search clean

install: $(VENV)/.installed dataset browser

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Pinned: both wheels lie on this machine's disk; any other version downloads gigabytes.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'
	touch $@

# Fashion-MNIST (the embedded default) from Debian's package, where apt is available.
dataset:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: present in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "no apt-get here: put Fashion-MNIST's four IDX .gz files in a folder and set [data].root"; \
	fi

# Headless Chromium and chromedriver for the browser tests (tests/browser, via selenium), from Debian.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  echo "Chromium: present (/usr/bin/chromium, /usr/bin/chromedriver)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
	  echo "no apt-get here: install Chromium and chromedriver as /usr/bin/chromium and /usr/bin/chromedriver"; \
	fi

# Two test processes (pytest-xdist), one per core. --dist loadfile keeps each file's tests in
# one of them, so its module fixtures are built once (session fixtures: once per process).
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A small real tuning on the embedded default: build the federation, tune four pairs with two
# workers, show the comparison with the T=1, alpha=0.5 default and export the winners.
DEMO_DB := sqlite:///demo.db
demo: install
	rm -f demo.db demo.db-wal demo.db-shm
	$(VENV)/bin/dkd-tune prepare
	$(VENV)/bin/dkd-tune --pairs 0-1,2-3,4-5,6-7 --workers 2 --storage $(DEMO_DB)
	$(VENV)/bin/dkd-tune status --storage $(DEMO_DB)
	$(VENV)/bin/dkd-tune export --storage $(DEMO_DB) --format csv --out demo-best.csv
	@echo "winners per pair: demo-best.csv; browse every trial: $(VENV)/bin/optuna-dashboard $(DEMO_DB)"

# Benchmarks are not part of `make test`: they print ratios, they assert nothing (results and
# how to read them: bench/RESULTS.md). On a machine with a GPU the GPU runs follow: the small CNN
# and ResNet-18 (synthetic CIFAR-10-shaped data) in bf16, with K trials at once.
BENCH_DEVICE ?= $(shell $(PY) -c "import torch; print('cuda:0' if torch.cuda.is_available() else 'cpu')")
bench: install
	$(PY) bench/trial_throughput.py --repeats 5 --batch-trials 4
	$(PY) bench/floor_gap.py
	@if [ "$(BENCH_DEVICE)" != cpu ]; then set -e; \
	  $(PY) bench/trial_throughput.py --device $(BENCH_DEVICE) --precision bf16 --repeats 5 --batch-trials 32; \
	  $(PY) bench/trial_throughput.py --device $(BENCH_DEVICE) --model resnet18 --precision bf16 --repeats 3 --batch-trials 8; \
	fi

# Search efficiency on fresh seeds: dkd-tune's recommendation against the T x alpha grid, cold and
# warm start (about 90 min on 2 idle CPU cores; true gains are cached in
# bench/results/search_truth.json and the search storages in bench/results/search_runs/).
bench-search: install
	$(PY) bench/search_simulated.py --sampler-seeds 20
	$(PY) bench/search_efficiency.py --pairs 0-1,2-5,3-7,4-6,6-8,4-5,0-9,1-2,2-7 --arms race --sampler-seeds 3 --out bench/results/search_efficiency_race.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache test-output
