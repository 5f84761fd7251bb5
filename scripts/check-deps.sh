#!/usr/bin/env bash
# check-deps.sh [package ...]: fails when the shipped binary (./cmd/outbox, or
# the packages given) links test code: the std testing package, testify,
# testcontainers-go, a Docker client, goleak, toxiproxy, or one of our
# test-only harnesses (internal/testkit/pgtest, internal/testkit/kafkatest,
# internal/testkit/pgcontainer). For each offending package it prints the import chain
# that pulls it in, from the binary's main package, so the fix is plain.
# internal/demo/pgcluster's TestBinaryLinksNoTestCode runs it, so `go test ./...`
# fails too. kfake is allowed: the embedded demo runs on it (internal/demo/embedkafka).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=("$@")
if [[ ${#pkgs[@]} -eq 0 ]]; then
  pkgs=(./cmd/outbox)
fi

module="$(go list -m)"
module_re="$(printf '%s' "$module" | sed 's/[.[\*^$()+?{|]/\\&/g')"
banned_re="^(testing(/.*)?|github\.com/stretchr/testify(/.*)?|github\.com/testcontainers/.*|github\.com/(docker|moby)/.*|.*docker.*|go\.uber\.org/goleak(/.*)?|github\.com/Shopify/toxiproxy(/.*)?|${module_re}/internal/testkit(/.*)?)$"

status=0
for pkg in "${pkgs[@]}"; do
  roots="$(go list -f '{{.ImportPath}}' "$pkg")"
  graph="$(go list -deps -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}' "$pkg")"
  # Breadth-first from the roots: the first chain found to each package is a
  # shortest one. A banned package is reported where the chain enters banned
  # ground (its importer is not banned), not for everything beneath it.
  if ! out="$(awk -v roots="$roots" -v banned="$banned_re" '
    { imports[$1] = $0 }
    END {
      n = split(roots, rs, "\n")
      head = 0; tail = 0
      for (i = 1; i <= n; i++) { queue[tail++] = rs[i]; seen[rs[i]] = 1 }
      bad = 0
      while (head < tail) {
        p = queue[head++]
        if (p ~ banned && !(p in parent && parent[p] ~ banned)) {
          bad++
          chain = p
          for (q = p; q in parent; q = parent[q]) chain = parent[q] " -> " chain
          printf "check-deps: %s links test-only package %s\n  %s\n", q, p, chain
        }
        m = split(imports[p], deps, " ")
        for (j = 2; j <= m; j++) {
          d = deps[j]
          if (!(d in seen)) { seen[d] = 1; parent[d] = p; queue[tail++] = d }
        }
      }
      exit bad > 0
    }' <<<"$graph")"; then
    printf '%s\n' "$out" >&2
    echo "check-deps: $pkg must not link test code: move the import into a _test.go file or a test-only package" >&2
    status=1
  fi
done
if [[ $status -eq 0 ]]; then
  echo "check-deps: ${pkgs[*]} link no test code"
fi
exit $status
