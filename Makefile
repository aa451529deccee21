# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv on first use and install everything, torch first (the CPU wheel on local disk;
# an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.feast-bc-installed
TORCH_VERSION ?= 2.13.0
WORKDIR ?= demo

.PHONY: install demo lint test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[training,dev,ray,s3,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m training demo --workdir $(WORKDIR)

lint: $(STAMP)
	$(BIN)/ruff check feast_bc training tests benchmarks examples
	$(BIN)/ruff format --check feast_bc training tests benchmarks examples

# Two pytest workers: most tests wait on Feast CLI subprocesses and servers, so a second worker
# uses the core the first leaves idle (measured: the suite in 17 min instead of 22-25 on 2 cores).
# `make test PYTEST_ARGS=` runs serially (e.g. with -s to see a test's printed counts).
PYTEST_ARGS ?= -n 2

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
