#!/usr/bin/env bash
# Renders every Kubernetes overlay and example with `kubectl kustomize`, then
# checks each rendered manifest:
#   * cert-manager objects against the vendored JSON schemas
#     (deploy/kubernetes/schemas/cert-manager), the rest with
#     kubernetes-validate --strict against the Kubernetes versions below;
#   * checkov (framework kubernetes), every finding fixed or waived in
#     deploy/checkov-waivers.txt with a reason;
#   * scripts/validate-deploy.py: NetworkPolicies (special-purpose ranges
#     excepted from internet egress, no egress to every destination, the
#     control-service's API only from its labelled clients), Pod Security
#     Admission labels against what the pods need, and in ha no plaintext
#     gRPC between the services (TLS on both, https:// geo endpoint);
# plus kubernetes-validate on the example Secrets and hadolint on the
# Dockerfiles. Needs kubectl (kustomize v5), kubernetes-validate (which
# brings PyYAML and jsonschema), hadolint and checkov (CHECKOV=path to
# override; .ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest and the newest minor versions this deployment is checked
# against (native sidecars need 1.29 or newer).
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.31.0 1.37.0"}
CHECKOV=${CHECKOV:-checkov}
k8s=deploy/kubernetes
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Waivers: "CKV_ID reason", comments and blank lines ignored. Lines
# "Kind/name CKV_ID reason" waive a check for one object, which carries
# checkov's inline annotation; validate-deploy.py checks those.
skip=()
object_waivers=0
while read -r id reason; do
  case "$id" in '' | '#'*) continue ;; esac
  if [ -z "$reason" ]; then
    echo "deploy/checkov-waivers.txt: $id has no reason" >&2
    exit 1
  fi
  case "$id" in */*) object_waivers=$((object_waivers + 1)); continue ;; esac
  skip+=("$id")
done < deploy/checkov-waivers.txt
skip_list=$(IFS=,; echo "${skip[*]}")

dirs=("$k8s"/overlays/*/ "$k8s"/examples/*/)
for dir in "${dirs[@]}"; do
  dir=${dir%/}
  name=$(echo "${dir#"$k8s"/}" | tr / -)
  rendered="$out/$name.yaml"
  kubectl kustomize "$dir" > "$rendered"
  echo "$dir: $(grep -c '^kind:' "$rendered") objects"
  # kubernetes-validate only warns on kinds it has no schema for: the
  # cert-manager objects are validated here, the rest go on to it.
  python3 scripts/validate-deploy.py crds "$k8s/schemas/cert-manager" "$rendered" > "$out/$name.core.yaml"
  for v in $KUBE_VERSIONS; do
    kubernetes-validate --strict --quiet -k "$v" "$out/$name.core.yaml"
  done
  BC_SKIP_MAPPING=TRUE "$CHECKOV" --framework kubernetes --quiet --compact --skip-download --skip-check "$skip_list" \
    -f "$rendered"
  # Every ha render (the overlay and the examples built on it) must carry
  # no plaintext gRPC between the services.
  # and is the fleet: a restricted control plane without a host `local`,
  # the agents in a namespace of their own.
  tls=()
  case "$name" in overlays-ha | examples-ha-*) tls=(--require-tls --fleet) ;; esac
  python3 scripts/validate-deploy.py checks "$rendered" "${tls[@]}"
done

# The checks above must be able to fail: each broken copy of the ha render
# (an http:// geo endpoint, a service without TLS, the geo-service let into
# the API, 5432 open to all, a special-purpose range let out, a weaker Pod
# Security label, a misspelt Certificate field, ...) must be refused.
python3 scripts/validate-deploy.py selftest "$k8s/schemas/cert-manager" "$out/overlays-ha.yaml"

# The example Secrets are documentation, applied by hand: they must still be
# valid objects.
for v in $KUBE_VERSIONS; do
  kubernetes-validate --strict --quiet -k "$v" "$k8s"/secrets/*.example.yaml
done

hadolint deploy/*.Dockerfile
echo "deploy: ${#dirs[@]} kustomizations rendered and valid; checkov clean (${#skip[@]} checks waived in deploy/checkov-waivers.txt, and $object_waivers for single objects); policies, Pod Security, the fleet's namespaces and ha TLS checked; Dockerfiles clean"
