#!/usr/bin/env bash
# Renders every Kubernetes overlay and example with `kubectl kustomize`, then
# checks each rendered manifest:
#   * kubernetes-validate --strict against the Kubernetes versions below;
#   * checkov (framework kubernetes), every finding fixed or waived in
#     deploy/checkov-waivers.txt with a reason;
# plus kubernetes-validate on the example Secrets and hadolint on the
# Dockerfiles. Needs kubectl (kustomize v5), kubernetes-validate, hadolint and
# checkov (CHECKOV=path to override; .ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest and the newest minor versions this deployment is checked
# against (native sidecars need 1.29 or newer).
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.31.0 1.37.0"}
CHECKOV=${CHECKOV:-checkov}
k8s=deploy/kubernetes
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Waivers: "CKV_ID reason", comments and blank lines ignored.
skip=()
while read -r id reason; do
  case "$id" in '' | '#'*) continue ;; esac
  if [ -z "$reason" ]; then
    echo "deploy/checkov-waivers.txt: $id has no reason" >&2
    exit 1
  fi
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
  for v in $KUBE_VERSIONS; do
    kubernetes-validate --strict --quiet -k "$v" "$rendered"
  done
  BC_SKIP_MAPPING=TRUE "$CHECKOV" --framework kubernetes --quiet --compact --skip-download --skip-check "$skip_list" \
    -f "$rendered"
done

# The example Secrets are documentation, applied by hand: they must still be
# valid objects.
for v in $KUBE_VERSIONS; do
  kubernetes-validate --strict --quiet -k "$v" "$k8s"/secrets/*.example.yaml
done

hadolint deploy/*.Dockerfile
echo "deploy: ${#dirs[@]} kustomizations rendered and valid; checkov clean (${#skip[@]} checks waived in deploy/checkov-waivers.txt); Dockerfiles clean"
