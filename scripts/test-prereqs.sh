#!/usr/bin/env bash
# Installs what `make test` starts, into the git-ignored .local/: the Tansu broker, the
# Python client the registry interop test drives, and the manifest check's kubectl and
# kubernetes-validate. Checks the OpenSSL headers librdkafka is built against (rdkafka's
# `ssl` feature: Kafka TLS and SASL SCRAM) and installs them with apt when missing.
# Idempotent; prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

have_openssl_headers() {
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; then
    return 0
  fi
  [ -f /usr/include/openssl/ssl.h ]
}

if ! have_openssl_headers || ! command -v pkg-config >/dev/null 2>&1; then
  echo "test-prereqs: librdkafka is built with TLS/SASL (rdkafka's ssl feature) and needs the OpenSSL headers and pkg-config"
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "test-prereqs: installing libssl-dev and pkg-config with apt-get"
    $sudo apt-get install -y libssl-dev pkg-config
  else
    echo "test-prereqs: install them with your package manager (Debian/Ubuntu: libssl-dev pkg-config; Fedora: openssl-devel pkgconf; macOS: brew install openssl pkg-config)" >&2
    exit 1
  fi
fi
echo "test-prereqs: OpenSSL headers present ($(pkg-config --modversion openssl 2>/dev/null || echo found))"

scripts/install-tansu.sh
bins/schema-registry/tests/setup-python-client.sh
scripts/install-k8s-tools.sh
