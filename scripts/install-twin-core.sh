#!/usr/bin/env bash
# Rebuild the compiled twin core (native/: Rust + PyO3) after a change to it, and check
# that it imports. `pip install -e .` builds it with the package (maturin, through
# native/build_backend.py, which says what to install when there is no Rust toolchain);
# this reinstalls the package alone, without its dependencies. About a minute and a half
# from a clean tree, 20 s when the crate is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps -e .
"$PYTHON" -c "import infragym._twin_core" # fail here, not in the tests
echo "install-twin-core: built infragym._twin_core" >&2
