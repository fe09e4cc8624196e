#!/usr/bin/env bash
# Installs what `make test` starts, into the git-ignored .local/: the Tansu broker, the
# Python client the registry interop test drives, and the manifest check's kubectl and
# kubernetes-validate. Idempotent; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tansu.sh
bins/schema-registry/tests/setup-python-client.sh
scripts/install-k8s-tools.sh
