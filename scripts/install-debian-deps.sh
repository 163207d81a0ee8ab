#!/usr/bin/env bash
# Install the Debian packages the test suite runs for real:
#
#   - prometheus: /usr/bin/prometheus, started on 127.0.0.1 by tests/metrics (a service the
#     package may start on :9090 is not used, and is left alone)
#   - the shellcheck linter, run on scripts/*.sh in CI
#
# Idempotent and quick when everything is installed already: it asks dpkg first and
# runs apt-get (update, then install --no-install-recommends) only for what is missing.
# Needs root (or sudo) only when something has to be installed.
set -euo pipefail

packages=(prometheus shellcheck)

missing=()
for pkg in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  if [ "$status" != "installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-debian-deps: already installed: ${packages[*]}" >&2
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install-debian-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "install-debian-deps: installing: ${missing[*]}" >&2
# `env` so the variable survives sudo's environment reset.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends "${missing[@]}"

# Fail here, not in the tests, if a binary the suite needs is still absent.
for bin in /usr/bin/prometheus /usr/bin/shellcheck; do
  if [ ! -x "$bin" ]; then
    echo "install-debian-deps: $bin missing after install" >&2
    exit 1
  fi
done
