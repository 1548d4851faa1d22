# The two commands of the README: `make run` and `make test`. Both create .venv when it is missing and
# install the locked dependency versions (requirements.lock), then genbench itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genbench-installed
LOCK := requirements.lock
ARGS ?=
TEST_WORKERS ?= 2  # pytest-xdist processes: the CI machine has 2 cores

.PHONY: run test lint install lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Regenerate requirements.lock from pyproject.toml's ranges (and lock-constraints.txt) with uv: exact
# versions and hashes of every dependency, for Python 3.10 and newer on every platform.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
		--generate-hashes --constraint lock-constraints.txt --output-file $(LOCK) --quiet

run: $(STAMP)
	$(PY) train.py $(ARGS)

# One intra-op thread unless told otherwise: test models are tiny, and on a busy 2-core machine torch's
# extra threads spin and made the suite many times slower.
test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts train.py eval.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
