# dkd-tune: `make install` builds .venv (PyTorch from this machine's disk), `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install dataset test lint demo bench clean

install: $(VENV)/.installed dataset

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

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Benchmarks are not part of `make test`: they print ratios, they assert nothing.
bench: install
	$(PY) bench/trial_throughput.py --repeats 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache test-output
