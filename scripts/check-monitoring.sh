#!/usr/bin/env bash
# Checks deploy/monitoring: the alert rules (promtool check + unit tests), the
# PrometheusRule generated from them, and the Grafana dashboard (valid JSON,
# every query valid PromQL, every metric one the services export).
#
#   scripts/check-monitoring.sh          check (CI: .ci/run calls this)
#   scripts/check-monitoring.sh --write  regenerate bangui-prometheusrule.yaml
#
# Needs promtool (Debian: apt-get install prometheus) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=deploy/monitoring
rules=$dir/bangui-rules.yaml
wrapped=$dir/bangui-prometheusrule.yaml
dashboard=$dir/bangui-dashboard.json

command -v promtool >/dev/null || { echo "promtool is missing: run .ci/run (or apt-get install prometheus)" >&2; exit 1; }

# The PrometheusRule is the rules file's groups under spec:, byte for byte.
prometheus_rule() {
  cat <<'HEAD'
# Generated from bangui-rules.yaml by scripts/check-monitoring.sh --write:
# edit the rules file, not this one. For the Prometheus Operator; its
# ruleSelector must match these labels (kube-prometheus-stack's default
# selects `release: <its release name>`: add that label with kustomize).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: bangui
  labels:
    app.kubernetes.io/part-of: bangui
    role: alert-rules
spec:
HEAD
  sed -n '/^groups:/,$p' "$rules" | sed 's/^/  /'
}

if [ "${1:-}" = "--write" ]; then
  prometheus_rule >"$wrapped"
  echo "wrote $wrapped"
  exit 0
fi

promtool check rules "$rules"
(cd "$dir" && promtool test rules bangui-rules.test.yaml)

if ! diff -u "$wrapped" <(prometheus_rule); then
  echo "$wrapped is out of date: run scripts/check-monitoring.sh --write" >&2
  exit 1
fi
echo "$wrapped: matches $rules"

python3 -m json.tool "$dashboard" >/dev/null
echo "$dashboard: valid JSON"

# Every dashboard query as a recording rule, so promtool parses it (Grafana's
# variables replaced by values), and every metric name checked against the
# names the services register.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$dashboard" "$rules" "$wrapped" "$tmp/dashboard-rules.yaml" <<'PY'
import json, re, sys

dashboard, rules, wrapped, out = sys.argv[1:5]
exported = set()
for path in ("geo-service/src/metrics.rs", "control-service/src/metrics.rs"):
    exported |= set(re.findall(r'pub const \w+: &str = "(\w+)";', open(path).read()))
assert len(exported) > 10, exported

def metric_names(expr):
    for name in re.findall(r"\b((?:geo|control)_[a-z_]+)\b", expr):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        yield name, base

exprs = []
for panel in json.load(open(dashboard))["panels"]:
    for target in panel.get("targets", []):
        exprs.append((panel["title"], target["expr"]))
assert exprs, "no queries in the dashboard"
bad = []
texts = [("dashboard: " + t, e) for t, e in exprs] + [("rules", open(rules).read())]
for where, text in texts:
    for name, base in metric_names(text):
        if base not in exported and name not in exported:
            bad.append(f"{where}: {name} is not a metric the services export")
if bad:
    sys.exit("\n".join(bad))

try:
    import yaml  # PyYAML (kubernetes-validate brings it); the diff above is the main check
except ImportError:
    yaml = None
if yaml:
    doc = yaml.safe_load(open(wrapped))
    assert doc["kind"] == "PrometheusRule", doc["kind"]
    assert doc["spec"] == yaml.safe_load(open(rules)), "the PrometheusRule's spec differs from the rules file"

with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (_, expr) in enumerate(exprs):
        expr = (expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
                .replace("$instance", ".*"))
        f.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(expr)}\n")
print(f"{dashboard}: {len(exprs)} queries, every metric exported by a service")
PY
promtool check rules "$tmp/dashboard-rules.yaml" >/dev/null
echo "$dashboard: every query parses (promtool)"
