#!/usr/bin/env bash
# The project's test command (the README's; .ci/run runs exactly this), from a clean checkout:
# a virtualenv in .venv, the package installed editable with the compiled extensions required,
# lint and types, then the whole suite twice: compiled extensions, then the pure-Python twins,
# then the fuzz smoke (tools/fuzz: every target for 100000 executions, compiled build).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# the compiled AES-GCM (ext/_aead_c.pyx) builds against OpenSSL's headers (Debian: libssl-dev),
# the compiled SQLite writer (ext/_batch_c.pyx) against SQLite's (libsqlite3-dev)
headers=()
[ -f /usr/include/openssl/evp.h ] || headers+=(libssl-dev)
[ -f /usr/include/sqlite3.h ] || headers+=(libsqlite3-dev)
if [ ${#headers[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${headers[@]}"
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
PRIVCHAT_BUILD_EXT=yes python -m pip install -q -e '.[dev,fuzz]'
PRIVCHAT_BUILD_EXT=yes python setup.py -q build_ext --inplace

echo "== ruff"
ruff check privchat_tcp tests tools benchmarks
ruff format --check privchat_tcp tests tools benchmarks
echo "== mypy"
mypy

echo "== tests, compiled extensions"
PRIVCHAT_REQUIRE_EXT=1 python -m pytest -q -p no:cacheprovider
echo "== tests, pure-Python twins"
PRIVCHAT_NO_EXTENSIONS=1 python -m pytest -q -p no:cacheprovider
echo "== fuzz smoke (tools/fuzz)"
PRIVCHAT_REQUIRE_EXT=1 python -m tools.fuzz smoke --runs 100000
