#!/usr/bin/env bash
# Make a Pulumi CLI matching the installed Python SDK available, offline.
#
# 1. If `pulumi` on PATH already has the SDK's version, use it.
# 2. Else, if a cached build exists under ~/.cache/infragym/pulumi-v<version>/, use it.
# 3. Else build it from the Go module github.com/pulumi/pulumi/pkg/v3/cmd/pulumi at the
#    SDK's version, through a throwaway wrapper module (`go install` refuses the module
#    because its go.mod has `replace` directives), and cache it.
#
# Prints the directory holding `pulumi` (and the `pulumi-resource-pulumi-python` shim that
# Python dynamic providers need) on its last line.  Online users can use the official
# installer instead (https://www.pulumi.com/docs/install/).
set -euo pipefail

PYTHON="${PYTHON:-python3}"
version="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("pulumi"))')"
cache_root="${INFRAGYM_CACHE:-$HOME/.cache/infragym}"
dest="$cache_root/pulumi-v$version"
export PULUMI_SKIP_UPDATE_CHECK=true

write_shim() {
  # Python dynamic providers are run by the engine as this plugin executable.
  cat >"$1/pulumi-resource-pulumi-python" <<'SHIM'
#!/bin/sh
exec "${PULUMI_PYTHON_CMD:-python3}" -u -m pulumi.dynamic "$@"
SHIM
  chmod +x "$1/pulumi-resource-pulumi-python"
}

if command -v pulumi >/dev/null 2>&1; then
  have="$(pulumi version 2>/dev/null || true)"
  # An exact match, as the official installer would give for this SDK.
  if [ "$have" = "v$version" ]; then
    dir="$(dirname "$(command -v pulumi)")"
    [ -x "$dir/pulumi-resource-pulumi-python" ] || command -v pulumi-resource-pulumi-python >/dev/null || write_shim "$dir"
    echo "pulumi $have from PATH" >&2
    echo "$dir"
    exit 0
  fi
fi

if [ -x "$dest/pulumi" ]; then
  write_shim "$dest"
  echo "pulumi $("$dest/pulumi" version) from cache $dest" >&2
  echo "$dest"
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "error: Go is needed to build the Pulumi CLI offline" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init infragym.local/pulumi-cli >/dev/null 2>&1
# The module proxy may not serve every release of pkg/v3.  Use the SDK's version when it
# is served, else the nearest newer one: a newer CLI drives an older SDK (the Automation
# API only enforces a minimum CLI version), while an older one may not.
build_version="$(go list -m -versions github.com/pulumi/pulumi/pkg/v3 | tr ' ' '\n' | sed 1d \
  | "$PYTHON" -c '
import sys
want = tuple(int(x) for x in sys.argv[1].split("."))
vs = sorted(tuple(int(x) for x in l.strip().lstrip("v").split(".")) for l in sys.stdin if l.strip())
newer = [v for v in vs if v >= want and v[0] == want[0]]
print(".".join(map(str, newer[0])) if newer else "")' "$version")"
[ -n "$build_version" ] || { echo "error: no pulumi pkg/v3 >= v$version on the Go module proxy" >&2; exit 1; }
[ "$build_version" = "$version" ] || echo "note: pkg/v3 v$version is not on the module proxy; building v$build_version" >&2
echo "building pulumi v$build_version from Go modules (first build: 5-15 min)..." >&2
mkdir -p "$dest"
cat >main.go <<'GO'
package main

// Wrapper module: imports nothing itself; the build target is the pulumi command package.
GO
go mod edit -replace github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e
GOFLAGS=-mod=mod go get "github.com/pulumi/pulumi/pkg/v3@v$build_version" >&2
rm -f main.go
start=$(date +%s)
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$build_version" \
  -o "$dest/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
echo "built in $(( $(date +%s) - start )) s; size $(du -h "$dest/pulumi" | cut -f1)" >&2
write_shim "$dest"
echo "$dest"
