#!/usr/bin/env bash
# Build the compiled twin core (native/: Rust + PyO3, built by maturin) and install it
# into $PYTHON's environment. The sim backend uses it when it is installed; without it,
# the Python twin runs (same results, about 2.5x slower under random actions).
#
# Needs a Rust toolchain (cargo); crates come from crates.io. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"  # rustup's default place, when not on PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-twin-core: needs a Rust toolchain (cargo on PATH), from rustup.rs" >&2
  exit 1
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check ./native
"$PYTHON" -c "import infragym_twin_core" # fail here, not in the tests
echo "install-twin-core: installed infragym-twin-core ($(cargo --version))" >&2
