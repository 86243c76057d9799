# Developer shortcuts. CI runs the same commands; PRIVCHAT_BUILD_EXT=yes makes a broken .pyx fatal.
PYTHON ?= python
SRC := privchat_tcp tests tools benchmarks

.PHONY: build debug test test-pure lint format types bench clean

build:  ## compile the Cython twins (ext/*.pyx) in place
	$(PYTHON) setup.py build_ext --inplace

debug:  ## in-place build with Cython annotation (ext/*.html) and line tracing
	PRIVCHAT_DEBUG=1 $(PYTHON) setup.py build_ext --inplace --force

test: build
	$(PYTHON) -m pytest

test-pure:  ## the same suite on the pure-Python fallback
	PRIVCHAT_NO_EXTENSIONS=1 $(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check $(SRC)
	$(PYTHON) -m ruff format --check $(SRC)

format:
	$(PYTHON) -m ruff check --fix $(SRC)
	$(PYTHON) -m ruff format $(SRC)

types:
	$(PYTHON) -m mypy

bench: build
	@for f in benchmarks/bench_*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks/bench_*.py yet"; break; }; \
		echo "== $$f"; $(PYTHON) "$$f" || exit 1; \
	done

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .benchmarks .hypothesis
	rm -f ext/*.c ext/*.html privchat_tcp/*.so privchat_tcp/*.pyd
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
