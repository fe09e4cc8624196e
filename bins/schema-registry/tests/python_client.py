"""Drives adpipe's schema registry with Confluent's own Python client, unchanged.

Usage: python_client.py <registry-url>. Exits non-zero with a message on the first mismatch.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

url = sys.argv[1]
client = SchemaRegistryClient({"url": url})
subject = "py.events-value"

v1 = json.dumps({"type": "record", "name": "Ev", "namespace": "py",
                 "fields": [{"name": "id", "type": "long"}]})
v2 = json.dumps({"type": "record", "name": "Ev", "namespace": "py",
                 "fields": [{"name": "id", "type": "long"},
                            {"name": "note", "type": ["null", "string"], "default": None}]})
breaking = json.dumps({"type": "record", "name": "Ev", "namespace": "py",
                       "fields": [{"name": "id", "type": "string"}]})


def check(cond, what):
    if not cond:
        print(f"python client: FAILED: {what}")
        sys.exit(1)


id1 = client.register_schema(subject, Schema(v1, "AVRO"))
check(client.register_schema(subject, Schema(v1, "AVRO")) == id1, "re-register gives the same id")
check(json.loads(client.get_schema(id1).schema_str) == json.loads(v1), "get_schema by id")
check(client.test_compatibility(subject, Schema(v2, "AVRO")) is True, "optional field is compatible")
check(client.test_compatibility(subject, Schema(breaking, "AVRO")) is False, "type change is not")
id2 = client.register_schema(subject, Schema(v2, "AVRO"))
check(id2 != id1, "a new schema gets a new id")
latest = client.get_latest_version(subject)
check(latest.version == 2 and latest.schema_id == id2, f"latest version: {latest}")
found = client.lookup_schema(subject, Schema(v1, "AVRO"))
check(found.version == 1 and found.schema_id == id1, f"lookup: {found}")
check(client.get_versions(subject) == [1, 2], "versions")
check(subject in client.get_subjects(), "subjects")
client.set_compatibility(subject_name=subject, level="FULL")
check(client.get_compatibility(subject) == "FULL", "subject compatibility")
try:
    client.register_schema(subject, Schema(breaking, "AVRO"))
    check(False, "an incompatible schema must be refused")
except SchemaRegistryError as e:
    check(e.http_status_code == 409 and e.error_code == 409, f"refusal: {e}")
try:
    client.get_schema(99999)
    check(False, "unknown id must fail")
except SchemaRegistryError as e:
    check(e.http_status_code == 404 and e.error_code == 40403, f"unknown id: {e}")
print("python client: all checks passed")
