"""Confluent's own Python client against BimRide's schema registry: every call the registry
implements, through `SchemaRegistryClient` and the Avro serializer pair.

Usage: registry_conformance.py OPEN_URL GUARDED_URL USER:PASSWORD
  OPEN_URL     a registry with no authentication
  GUARDED_URL  a registry that asks every request for basic authentication
Exits non-zero, naming the call, on the first answer that differs from Confluent's.
"""

import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext


def record(*fields):
    return json.dumps(
        {"type": "record", "name": "Trip", "namespace": "py", "fields": list(fields)}
    )


V1 = record({"name": "id", "type": "string"})
V2 = record({"name": "id", "type": "string"}, {"name": "km", "type": "double", "default": 0.0})
BREAKING = record({"name": "id", "type": "string"}, {"name": "rider", "type": "string"})


def check(name, got, want):
    if got != want:
        sys.exit(f"FAIL {name}: got {got!r}, want {want!r}")
    print(f"ok   {name}")


def refused(name, call, status, code):
    try:
        call()
    except SchemaRegistryError as e:
        check(name, (e.http_status_code, e.error_code), (status, code))
        return
    sys.exit(f"FAIL {name}: the call succeeded")


def open_registry(url):
    sr = SchemaRegistryClient({"url": url})
    check("get_schema_types", sr.get_schema_types(), ["AVRO"])

    first = sr.register_schema("trips-value", Schema(V1, "AVRO"))
    check("register_schema again", sr.register_schema("trips-value", Schema(V1, "AVRO")), first)
    full = sr.register_schema_full_response("copies-value", Schema(V1, "AVRO"))
    check("register_schema_full_response", (full.schema_id, full.version), (first, 1))
    check("get_schema", json.loads(sr.get_schema(first).schema_str), json.loads(V1))
    versions = sr.get_schema_versions(first)
    check(
        "get_schema_versions",
        sorted((v.subject, v.version) for v in versions),
        [("copies-value", 1), ("trips-value", 1)],
    )
    found = sr.lookup_schema("trips-value", Schema(V1, "AVRO"))
    check("lookup_schema", (found.schema_id, found.version), (first, 1))
    refused(
        "lookup_schema of an unknown schema",
        lambda: sr.lookup_schema("trips-value", Schema(V2, "AVRO")),
        404,
        40403,
    )

    check("test_compatibility", sr.test_compatibility("trips-value", Schema(V2, "AVRO")), True)
    check(
        "test_compatibility breaking",
        sr.test_compatibility("trips-value", Schema(BREAKING, "AVRO"), version=1),
        False,
    )
    check(
        "test_compatibility verbose",
        sr.test_compatibility("trips-value", Schema(BREAKING, "AVRO"), verbose=True),
        False,
    )
    second = sr.register_schema("trips-value", Schema(V2, "AVRO"))
    check(
        "test_compatibility_all_versions",
        sr.test_compatibility_all_versions("trips-value", Schema(V2, "AVRO")),
        True,
    )
    refused(
        "register_schema incompatible",
        lambda: sr.register_schema("trips-value", Schema(BREAKING, "AVRO")),
        409,
        409,
    )

    check("get_subjects", sorted(sr.get_subjects()), ["copies-value", "trips-value"])
    check("get_versions", sr.get_versions("trips-value"), [1, 2])
    check("get_version", sr.get_version("trips-value", 1).schema_id, first)
    latest = sr.get_latest_version("trips-value")
    check("get_latest_version", (latest.schema_id, latest.version), (second, 2))
    refused("get_version unknown subject", lambda: sr.get_version("nobody-value", 1), 404, 40401)
    refused("get_version unknown version", lambda: sr.get_version("trips-value", 9), 404, 40402)
    refused("get_schema unknown id", lambda: sr.get_schema(999_999), 404, 40403)

    check("get_compatibility global", sr.get_compatibility(), "BACKWARD")
    check("set_compatibility subject", sr.set_compatibility("trips-value", "FULL"), {"compatibility": "FULL"})
    check("get_compatibility subject", sr.get_compatibility("trips-value"), "FULL")
    check("get_config subject", sr.get_config("trips-value").compatibility_level.value, "FULL")
    sr.delete_config("trips-value")
    refused(
        "get_compatibility after delete_config",
        lambda: sr.get_compatibility("trips-value"),
        404,
        40408,
    )
    check("set_compatibility global", sr.set_compatibility(level="NONE"), {"compatibility": "NONE"})
    check("get_config global", sr.get_config().compatibility_level.value, "NONE")
    sr.set_compatibility(level="BACKWARD")
    refused(
        "set_compatibility invalid",
        lambda: sr.set_compatibility(level="SIDEWAYS"),
        422,
        42203,
    )

    check("get_global_mode", sr.get_global_mode(), "READWRITE")
    check("update_global_mode", sr.update_global_mode("READONLY"), "READONLY")
    refused(
        "register_schema while read-only",
        lambda: sr.register_schema("frozen-value", Schema(V1, "AVRO")),
        422,
        42205,
    )
    check("update_global_mode back", sr.update_global_mode("READWRITE"), "READWRITE")

    # The serializer registers the writer's schema and frames the id; the deserializer
    # fetches it by id.
    context = SerializationContext("py-trips", MessageField.VALUE)
    serialize = AvroSerializer(sr, V2)
    framed = serialize({"id": "r1", "km": 4.5}, context)
    check("AvroSerializer framing", (framed[0], int.from_bytes(framed[1:5], "big")), (0, second))
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": url}))
    check("AvroDeserializer", deserialize(framed, context), {"id": "r1", "km": 4.5})
    check("subject of the serializer", "py-trips-value" in sr.get_subjects(), True)

    check("delete_version", sr.delete_version("trips-value", 2), 2)
    check("get_versions deleted", sr.get_versions("trips-value", deleted=True), [1, 2])
    check("delete_version permanent", sr.delete_version("trips-value", 2, permanent=True), 2)
    check("delete_subject", sr.delete_subject("copies-value"), [1])
    check("get_subjects deleted", "copies-value" in sr.get_subjects(deleted=True), True)
    check("get_subjects live", "copies-value" in sr.get_subjects(), False)
    check("delete_subject permanent", sr.delete_subject("copies-value", permanent=True), [1])
    refused(
        "delete_subject permanent twice",
        lambda: sr.delete_subject("copies-value", permanent=True),
        404,
        40401,
    )


def guarded_registry(url, user_info):
    anonymous = SchemaRegistryClient({"url": url})
    refused("get_subjects without a credential", anonymous.get_subjects, 401, 40101)
    wrong = SchemaRegistryClient({"url": url, "basic.auth.user.info": user_info + "x"})
    refused(
        "register_schema with a wrong password",
        lambda: wrong.register_schema("auth-value", Schema(V1, "AVRO")),
        401,
        40101,
    )
    sr = SchemaRegistryClient({"url": url, "basic.auth.user.info": user_info})
    schema_id = sr.register_schema("auth-value", Schema(V1, "AVRO"))
    check("register_schema with a credential", sr.get_version("auth-value", 1).schema_id, schema_id)
    check("get_subjects with a credential", sr.get_subjects(), ["auth-value"])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    open_registry(sys.argv[1])
    guarded_registry(sys.argv[2], sys.argv[3])
    print("all calls answered as Confluent's registry answers them")
