#!/usr/bin/env bash
# Set up a fresh machine (Python 3.11 + Go + apt) and run the whole test suite.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
bash scripts/install-debian-deps.sh                      # prometheus, shellcheck
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[dev]"  # + the twin core (cargo)
"$PYTHON" -c "import infragym._twin_core"                   # fail here, not in the tests
pulumi_dir="$(PYTHON="$PYTHON" bash scripts/install-pulumi-cli.sh | tail -n 1)"  # built once, cached
export PATH="$pulumi_dir:$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_PYTHON_CMD="$(command -v "$PYTHON")"
export PULUMI_PYTHON_CMD
# The local Kubernetes and the real k8s provider (tests marked kubernetes): built once, cached
PYTHON="$PYTHON" PULUMI="$pulumi_dir/pulumi" bash scripts/install-kubernetes.sh >/dev/null
export INFRAGYM_REQUIRE_K8S=1

"$PYTHON" -m ruff check .
"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
