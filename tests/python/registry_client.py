#!/usr/bin/env python3
"""Checks that Tributary's schema registry works with Confluent's Python client.

Usage: REGISTRY_USER_INFO=NAME:SECRET python3 tests/python/registry_client.py http://127.0.0.1:8081

Uses confluent-kafka's SchemaRegistryClient, AvroSerializer and
AvroDeserializer (no broker needed) against an empty registry, authenticated
with HTTP Basic (`basic.auth.user.info`): NAME and SECRET are the name and
secret of a token with the admin scope in the registry's `auth.tokens` (from
the environment, so the secret stays off the command line). Exits 0 when
every check passes; otherwise prints which check failed and exits 1.
"""

import json
import os
import sys
import traceback

try:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError as missing:
    # The `schemaregistry` extra's requirements are not installed with the wheel.
    sys.exit(
        f"FAILED: cannot import confluent-kafka's schema registry client ({missing}); install "
        "confluent-kafka==2.16.1 fastavro 'authlib>=1.8' 'cachetools>=5.5' 'httpx2>=2.0'"
    )

SUBJECT = "py.orders.events-py.orders.OrderNoted"
TOPIC = "py.orders.events"

V1 = {
    "type": "record",
    "name": "OrderNoted",
    "namespace": "py.orders",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "quantity", "type": "int", "default": 1},
    ],
}
# Adds a field with a default: backward compatible.
V2 = {**V1, "fields": V1["fields"] + [{"name": "note", "type": ["null", "string"], "default": None}]}
# Adds a field without a default: the new schema cannot read v1/v2 data.
INCOMPATIBLE = {**V1, "fields": V1["fields"] + [{"name": "required", "type": "long"}]}


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def avro(schema):
    return Schema(json.dumps(schema), schema_type="AVRO")


def run(url, user_info):
    def registry(credentials=user_info):
        """A fresh client (an empty cache), sending `credentials` with Basic auth."""
        conf = {"url": url}
        if credentials is not None:
            conf["basic.auth.user.info"] = credentials
        return SchemaRegistryClient(conf)

    # Without credentials, or with a wrong secret, the registry refuses.
    name = user_info.split(":", 1)[0]
    for label, credentials in [("no credentials", None), ("a wrong secret", f"{name}:not-the-secret-at-all")]:
        try:
            registry(credentials).get_subjects()
            raise CheckFailed(f"the registry answered a client with {label}")
        except SchemaRegistryError as error:
            check(error.http_status_code == 401, f"{label}: HTTP {error.http_status_code}, expected 401")

    client = registry()

    first = client.register_schema(SUBJECT, avro(V1))
    check(isinstance(first, int) and first > 0, f"register returned id {first!r}")

    # A fresh client, so the second registration goes to the server rather than the cache.
    again = registry().register_schema(SUBJECT, avro(V1))
    check(again == first, f"re-registering the same schema gave id {again}, expected {first}")

    fetched = registry().get_schema(first)
    check(fetched.schema_type == "AVRO", f"schema type {fetched.schema_type!r}")
    check(json.loads(fetched.schema_str)["name"] == "OrderNoted", f"fetched schema {fetched.schema_str}")

    second = client.register_schema(SUBJECT, avro(V2))
    check(second != first, "a new schema must get a new id")

    latest = client.get_latest_version(SUBJECT)
    check(latest.version == 2, f"latest version {latest.version}, expected 2")
    check(latest.schema_id == second, f"latest id {latest.schema_id}, expected {second}")
    check(latest.subject == SUBJECT, f"latest subject {latest.subject!r}")

    looked_up = registry().lookup_schema(SUBJECT, avro(V1))
    check(looked_up.version == 1 and looked_up.schema_id == first, f"lookup gave {looked_up}")

    versions = client.get_schema_versions(first)
    check([(v.subject, v.version) for v in versions] == [(SUBJECT, 1)], f"versions of {first}: {versions}")

    check(client.get_versions(SUBJECT) == [1, 2], f"versions {client.get_versions(SUBJECT)}")
    subjects = client.get_subjects()
    check(SUBJECT in subjects, f"subjects {subjects} lack {SUBJECT}")

    check(client.get_compatibility() == "BACKWARD_TRANSITIVE", f"global level {client.get_compatibility()}")
    set_result = client.set_compatibility(SUBJECT, "FULL_TRANSITIVE")
    check(set_result.get("compatibility") == "FULL_TRANSITIVE", f"set_compatibility returned {set_result}")
    check(client.get_compatibility(SUBJECT) == "FULL_TRANSITIVE", f"subject level {client.get_compatibility(SUBJECT)}")
    client.set_compatibility(SUBJECT, "BACKWARD")

    check(not client.test_compatibility(SUBJECT, avro(INCOMPATIBLE)), "test_compatibility accepted an incompatible schema")
    check(client.test_compatibility(SUBJECT, avro(V2)), "test_compatibility refused a compatible schema")
    try:
        client.register_schema(SUBJECT, avro(INCOMPATIBLE))
        raise CheckFailed("an incompatible schema was registered")
    except SchemaRegistryError as error:
        check(error.http_status_code == 409, f"incompatible schema: HTTP {error.http_status_code}, expected 409")
        check(error.error_code == 409, f"incompatible schema: error code {error.error_code}, expected 409")

    try:
        client.get_version(SUBJECT, 99)
        raise CheckFailed("version 99 was found")
    except SchemaRegistryError as error:
        check(error.error_code == 40402, f"unknown version: error code {error.error_code}, expected 40402")

    # Serialize and deserialize through the registry, no broker needed.
    context = SerializationContext(TOPIC, MessageField.VALUE)
    serializer = AvroSerializer(client, json.dumps(V2))
    record = {"order_id": "o-1", "quantity": 3, "note": "gift wrap"}
    framed = serializer(record, context)
    check(framed[0] == 0, f"magic byte {framed[0]}")
    schema_id = int.from_bytes(framed[1:5], "big")
    value_id = registry().get_latest_version(f"{TOPIC}-value").schema_id
    check(schema_id == value_id, f"framed id {schema_id}, registered {value_id}")
    check(schema_id == second, f"the same schema under another subject got id {schema_id}, expected {second}")

    deserializer = AvroDeserializer(registry())
    decoded = deserializer(framed, context)
    check(decoded == record, f"round trip gave {decoded}, expected {record}")

    # A reader schema: data written with v2 read as v1 (resolution drops `note`).
    reader = AvroDeserializer(registry(), json.dumps(V1))
    resolved = reader(framed, context)
    check(resolved == {"order_id": "o-1", "quantity": 3}, f"resolved to {resolved}")


def main():
    user_info = os.environ.get("REGISTRY_USER_INFO", "")
    if len(sys.argv) != 2 or ":" not in user_info:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        run(sys.argv[1], user_info)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - any other error is a failure too, with its trace
        print("FAILED with an unexpected error:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print("ok: the registry works with confluent-kafka's client (Basic auth), serializer and deserializer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
