#!/usr/bin/env bash
# Checks the deployment files in deploy/: the Prometheus rules (promtool check
# rules, promtool test rules), the Helm chart (helm lint and helm template,
# with the default values and with every optional part on), and the rendered
# manifests, the dashboard and the systemd units against the code
# (go test ./deploy/: strict decoding into the Kubernetes API types, metric
# names and labels, the binary's --check on every command line,
# systemd-analyze verify).
#
# Installs what it needs once and is safe to run again: promtool from Debian's
# prometheus package (its service is not started), helm built from the Go
# module proxy at a pinned version into ~/.cache/outbox/bin.
#
#   bash scripts/check-deploy.sh             # everything
#   bash scripts/check-deploy.sh tools       # only install promtool and helm
#   bash scripts/check-deploy.sh helm-path   # install helm, print its path
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest Helm 3 the module proxy serves that builds with Go 1.26.
helm_version=v3.22.0
kube_version=1.31.0
cache="${OUTBOX_CACHE:-$HOME/.cache/outbox}/bin"
helm="$cache/helm-$helm_version/helm"

ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found: installing Debian's prometheus package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends prometheus >&2
    # The package starts its own Prometheus where it can; only promtool is needed.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
      systemctl disable --now prometheus >&2 || true
    elif command -v service >/dev/null 2>&1 && service prometheus status >/dev/null 2>&1; then
      service prometheus stop >&2 || true
    fi
    command -v promtool >/dev/null 2>&1 && return 0
  fi
  cat >&2 <<'MSG'
error: promtool is not installed.
  Debian/Ubuntu:  sudo apt-get install -y prometheus   (then: sudo systemctl disable --now prometheus)
  or put promtool from a Prometheus release on PATH.
MSG
  exit 1
}

ensure_helm() {
  [[ -x "$helm" ]] && return 0
  if ! command -v go >/dev/null 2>&1; then
    echo "error: Go is not installed; it builds helm $helm_version. Install Go 1.26 or newer." >&2
    exit 1
  fi
  echo "building helm $helm_version into $(dirname "$helm") (once)" >&2
  mkdir -p "$(dirname "$helm")"
  # Outside the module, so the project's go.mod is neither read nor changed.
  (cd "$(mktemp -d)" && GOFLAGS= GOBIN="$(dirname "$helm")" go install "helm.sh/helm/v3/cmd/helm@$helm_version" >&2)
}

case "${1:-all}" in
  tools) ensure_promtool; ensure_helm; exit 0 ;;
  helm-path) ensure_helm; echo "$helm"; exit 0 ;;
  all) ;;
  *) echo "usage: $0 [all|tools|helm-path]" >&2; exit 2 ;;
esac

ensure_promtool
ensure_helm

echo "== promtool $(promtool --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p'): rules"
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts_test.yaml)

echo "== helm $helm_version: lint and template"
chart=deploy/helm/outbox
all_values=$chart/ci/all-enabled-values.yaml
"$helm" lint --strict --kube-version "$kube_version" "$chart"
"$helm" lint --strict --kube-version "$kube_version" "$chart" -f "$all_values"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$helm" template outbox "$chart" --kube-version "$kube_version" >"$out/defaults.yaml"
"$helm" template outbox "$chart" --kube-version "$kube_version" -f "$all_values" >"$out/all-enabled.yaml"
for f in "$out"/*.yaml; do
  echo "$(basename "$f" .yaml): $(grep -c '^kind:' "$f") manifests ($(grep '^kind:' "$f" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))"
done

echo "== manifests, dashboard, rules and units against the code (go test ./deploy/)"
go test -count=1 ./deploy/
