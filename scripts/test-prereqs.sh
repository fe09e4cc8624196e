#!/usr/bin/env bash
# Installs what `make test` starts, into the git-ignored .local/: the Tansu broker and the
# Python client the registry interop test drives. Idempotent; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tansu.sh
bins/schema-registry/tests/setup-python-client.sh
