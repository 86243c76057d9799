#!/usr/bin/env bash
# The project's test command (the README's; .ci/run runs exactly this), from a clean checkout:
# a virtualenv in .venv, the package installed editable with the compiled decoder required,
# lint and types, then the whole suite twice: compiled decoder, then the pure-Python twin.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
PRIVCHAT_BUILD_EXT=yes python -m pip install -q -e '.[dev]'
PRIVCHAT_BUILD_EXT=yes python setup.py -q build_ext --inplace

echo "== ruff"
ruff check privchat_tcp tests tools benchmarks
ruff format --check privchat_tcp tests tools benchmarks
echo "== mypy"
mypy

echo "== tests, compiled decoder"
PRIVCHAT_REQUIRE_EXT=1 python -m pytest -q -p no:cacheprovider
echo "== tests, pure-Python decoder"
PRIVCHAT_NO_EXTENSIONS=1 python -m pytest -q -p no:cacheprovider
