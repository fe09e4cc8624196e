#!/usr/bin/env bash
# Creates .local/venv with Confluent's Python client, which the registry interop test drives
# (confluent_kafka.schema_registry.SchemaRegistryClient). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv=.local/venv
spec=${CONFLUENT_KAFKA_SPEC:-"confluent-kafka[schemaregistry,avro]==2.*"}
if [[ -x $venv/bin/python ]] && $venv/bin/python -c "import confluent_kafka.schema_registry" 2>/dev/null; then
  echo "python client: $($venv/bin/python -c 'import confluent_kafka; print("confluent-kafka", confluent_kafka.version()[0])') already in $venv"
  exit 0
fi
echo "python client: installing $spec into $venv..."
start=$(date +%s)
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"
echo "python client: ready in $(( $(date +%s) - start )) s"
