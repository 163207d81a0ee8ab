#!/usr/bin/env bash
# Build the local Kubernetes used by the `kubernetes` tests and `infragym cluster up`, offline,
# from Go modules, and cache it:
#
#   etcd                      go.etcd.io/etcd/server/v3            v3.6.16
#   kube-apiserver,           k8s.io/kubernetes                    v1.35.4
#   kube-controller-manager,
#   kube-scheduler
#   kwok                      sigs.k8s.io/kwok                     v0.8.0
#   kube-state-metrics        k8s.io/kube-state-metrics/v2         v2.20.0
#   pulumi-resource-kubernetes github.com/pulumi/pulumi-kubernetes/provider/v4 (the one
#                             pseudo-version the module proxy serves), registered with the
#                             Pulumi CLI under the installed Python SDK's version
#
# Modules whose go.mod has `replace` lines refuse `go install mod@ver`, so each binary is
# built in a throwaway wrapper module (as scripts/install-pulumi-cli.sh does) with the
# needed `replace` lines pinned to published versions.
#
# The binaries go to ~/.cache/infragym/k8s-<versions>/ (INFRAGYM_CACHE overrides the root);
# a binary already there is reused.  Prints what it built and how long each took on stderr,
# and the directory on its last line.
#
# Environment:
#   INFRAGYM_BUILD_JOBS  `go build -p` (default: the number of cores)
#   INFRAGYM_K8S_ONLY    space-separated subset of: etcd apiserver controller-manager
#                        scheduler kwok kube-state-metrics provider (default: all)
#   PULUMI               the Pulumi CLI used to register the provider (default: `pulumi`
#                        on PATH; registration is skipped with a note when there is none)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
ETCD_VERSION=3.6.16
K8S_VERSION=1.35.4
KWOK_VERSION=0.8.0
KSM_VERSION=2.20.0
PK_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4
PK_MODULE_VERSION=v4.0.0-20260115033456-f47bc2d6f199
# The provider is registered under the Python SDK's version, so the engine loads it
# without a version warning and never tries to download one.
PK_SDK_VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("pulumi_kubernetes"))')"

cache_root="${INFRAGYM_CACHE:-$HOME/.cache/infragym}"
dest="$cache_root/k8s-v$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION-ksm$KSM_VERSION-pk$PK_SDK_VERSION"
jobs="${INFRAGYM_BUILD_JOBS:-$(nproc)}"
only="${INFRAGYM_K8S_ONLY:-etcd apiserver controller-manager scheduler kwok kube-state-metrics provider}"
export PULUMI_SKIP_UPDATE_CHECK=true
mkdir -p "$dest"

wanted() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
say() { echo "install-kubernetes: $*" >&2; }

# Set up an empty wrapper module in a fresh directory and cd into it.
new_wrapper() {
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init "infragym.local/$1" >/dev/null 2>&1
  printf 'package main\n\n// Wrapper module: the build target is another module'"'"'s command.\n' >main.go
}

# go build PACKAGE into $dest/NAME with LDFLAGS, timed.
build() {
  local name="$1" pkg="$2" ldflags="$3" start
  rm -f main.go
  start=$(date +%s)
  GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 10 go build -p "$jobs" -trimpath \
    -ldflags "-s -w $ldflags" -o "$dest/$name.tmp" "$pkg" >&2
  mv "$dest/$name.tmp" "$dest/$name"
  say "built $name in $(($(date +%s) - start)) s ($(du -h "$dest/$name" | cut -f1))"
  echo "$name" >>"$built_log"
}

command -v go >/dev/null 2>&1 || { echo "error: Go is needed to build Kubernetes offline" >&2; exit 1; }
total_start=$(date +%s)
built_log="$(mktemp)"
trap 'rm -f "$built_log"' EXIT

if wanted etcd && [ ! -x "$dest/etcd" ]; then
  say "building etcd v$ETCD_VERSION..."
  (
    new_wrapper etcd
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@v$ETCD_VERSION"
    done
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    build etcd go.etcd.io/etcd/server/v3 ""
  )
fi

k8s_bins=()
for b in apiserver controller-manager scheduler; do
  if wanted "$b" && [ ! -x "$dest/kube-$b" ]; then k8s_bins+=("$b"); fi
done
if [ "${#k8s_bins[@]}" -gt 0 ]; then
  say "building kube-{${k8s_bins[*]}} v$K8S_VERSION..."
  (
    new_wrapper kubernetes
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
      | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    # Each staging module (k8s.io/api => ./staging/src/k8s.io/api, ...) is published as
    # k8s.io/<name> v0.<minor>.<patch>.
    staging="$(sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$gomod")"
    [ -n "$staging" ] || { echo "error: no staging replaces in $gomod" >&2; exit 1; }
    for m in $staging; do go mod edit -replace "$m=$m@v0.${K8S_VERSION#*.}"; done
    GOFLAGS=-mod=mod go get "k8s.io/kubernetes@v$K8S_VERSION" >&2
    # Without these the server reports v0.0.0-master+$Format:%H$, which clients reject.
    ld=""
    for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*}"
      minor="${K8S_VERSION#*.}"
      ld+=" -X $p.gitMinor=${minor%%.*} -X $p.gitTreeState=clean"
      ld+=" -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    for b in "${k8s_bins[@]}"; do build "kube-$b" "k8s.io/kubernetes/cmd/kube-$b" "$ld"; done
  )
fi

if wanted kwok && [ ! -x "$dest/kwok" ]; then
  say "building kwok v$KWOK_VERSION..."
  (
    new_wrapper kwok
    GOFLAGS=-mod=mod go get "sigs.k8s.io/kwok@v$KWOK_VERSION" >&2
    build kwok sigs.k8s.io/kwok/cmd/kwok ""
  )
fi

# KWOK ships no behaviour of its own: the cluster gives it the stage definitions that its
# module carries (node heartbeat with lease; pod ready, complete, delete; the node
# initialise stage is infragym's own, in infragym/cluster/stages.py). They are copied
# from the module cache beside the binary and read at run time.
if wanted kwok && [ ! -s "$dest/kwok-stages/pod-delete.yaml" ]; then
  kwok_src="$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" \
    | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/kustomize/stage"
  mkdir -p "$dest/kwok-stages"
  for f in node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    install -m 0644 "$kwok_src/$f" "$dest/kwok-stages/$(basename "$f")"
  done
  say "kwok stages from $kwok_src"
fi

if wanted kube-state-metrics && [ ! -x "$dest/kube-state-metrics" ]; then
  say "building kube-state-metrics v$KSM_VERSION..."
  (
    new_wrapper kube-state-metrics
    GOFLAGS=-mod=mod go get "k8s.io/kube-state-metrics/v2@v$KSM_VERSION" >&2
    build kube-state-metrics k8s.io/kube-state-metrics/v2 \
      "-X github.com/prometheus/common/version.Version=v$KSM_VERSION"
  )
fi

if wanted provider && [ ! -x "$dest/pulumi-resource-kubernetes" ]; then
  say "building pulumi-resource-kubernetes ($PK_MODULE@$PK_MODULE_VERSION) as v$PK_SDK_VERSION..."
  (
    new_wrapper pulumi-kubernetes
    src="$(go mod download -json "$PK_MODULE@$PK_MODULE_VERSION" \
      | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    # The module lacks the go:embed files that upstream generates (go generate runs
    # generate.go: the schema with its version set, and both JSON files minified), so
    # build from a writable copy with them generated.
    cp -r "$src" provider-src
    chmod -R u+w provider-src
    (
      cd provider-src/cmd/pulumi-resource-kubernetes
      "$PYTHON" - "$PK_SDK_VERSION" <<'PY'
import json
import sys

schema = json.load(open("schema.json"))
schema["version"] = sys.argv[1]
json.dump(schema, open("schema-embed.json", "w"), separators=(",", ":"))
mapping = json.load(open("terraform-mapping.json"))
json.dump(mapping, open("terraform-mapping-embed.json", "w"), separators=(",", ":"))
PY
    )
    # The provider's own `replace sdk/v4 => ../sdk` does not apply here; sdk/v4 is published.
    go mod edit -replace "$PK_MODULE=./provider-src" -require "$PK_MODULE@$PK_MODULE_VERSION"
    GOFLAGS=-mod=mod go mod tidy >&2 || true
    build pulumi-resource-kubernetes "$PK_MODULE/cmd/pulumi-resource-kubernetes" \
      "-X $PK_MODULE/pkg/version.Version=v$PK_SDK_VERSION"
  )
fi

# Register the provider with the Pulumi CLI under the SDK's version.
if wanted provider && [ -x "$dest/pulumi-resource-kubernetes" ]; then
  pulumi_bin="${PULUMI:-$(command -v pulumi || true)}"
  plugin_dir="${PULUMI_HOME:-$HOME/.pulumi}/plugins/resource-kubernetes-v$PK_SDK_VERSION"
  if [ -z "$pulumi_bin" ]; then
    say "note: no pulumi CLI on PATH; the kubernetes provider is not registered"
  elif ! cmp -s "$dest/pulumi-resource-kubernetes" "$plugin_dir/pulumi-resource-kubernetes"; then
    "$pulumi_bin" plugin install resource kubernetes "$PK_SDK_VERSION" \
      --file "$dest/pulumi-resource-kubernetes" >&2
    say "registered pulumi-resource-kubernetes as resource kubernetes v$PK_SDK_VERSION"
  fi
fi

if [ -s "$built_log" ]; then
  say "built $(tr '\n' ' ' <"$built_log")in $(($(date +%s) - total_start)) s"
else
  say "all binaries from cache $dest"
fi
echo "$dest"
