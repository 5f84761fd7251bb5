// Package deploy holds what runs the outbox pipeline outside this
// repository: the Helm chart (helm/outbox), systemd units (systemd), the
// Prometheus alert rules and their promtool tests (prometheus), the Grafana
// dashboard (grafana) and the topics file (topics.yaml). It has no Go API;
// its tests check those files against the code: every metric a rule or a
// panel reads is one the stages export, with the labels they carry; every
// rendered manifest decodes strictly into the Kubernetes API types; every
// command line the chart and the units run is one the binary accepts.
// scripts/check-deploy.sh runs the same checks with their tools.
package deploy
