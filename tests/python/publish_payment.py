"""Publishes a PaymentCaptured as a payment provider would: confluent-kafka's
SerializingProducer with its AvroSerializer, using the schema registered in
Tributary's registry (a client we did not write).

usage: REGISTRY_USER_INFO=NAME:SECRET publish_payment.py BOOTSTRAP REGISTRY_URL TOPIC ORDER_ID AMOUNT_MINOR CURRENCY

The registry wants a token: NAME and SECRET are a token's name and secret from
its `auth.tokens` (any scope may read), sent as HTTP Basic
(`basic.auth.user.info`), from the environment to keep the secret off the
command line.
"""

import os
import pathlib
import sys
import time

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer
from confluent_kafka.schema_registry import topic_record_subject_name_strategy

bootstrap, registry_url, topic, order_id, amount, currency = sys.argv[1:7]
schema = (pathlib.Path(__file__).parents[2] / "schemas/avro/payments.PaymentCaptured/v1.avsc").read_text()

serializer = AvroSerializer(
    SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": os.environ["REGISTRY_USER_INFO"]}),
    schema,
    conf={
        "auto.register.schemas": False,
        "use.latest.version": True,
        "subject.name.strategy": topic_record_subject_name_strategy,
    },
)
producer = SerializingProducer(
    {
        "bootstrap.servers": bootstrap,
        "key.serializer": StringSerializer("utf_8"),
        "value.serializer": serializer,
        "enable.idempotence": True,
    }
)
errors = []
producer.produce(
    topic,
    key=order_id,
    value={
        "payment_id": "py-pay-1",
        "order_id": order_id,
        "amount_minor": int(amount),
        "currency": currency,
        "captured_at": int(time.time() * 1000),
    },
    on_delivery=lambda err, msg: errors.append(err) if err else None,
)
producer.flush(30)
if errors:
    sys.exit(f"FAILED: delivery failed: {errors}")
print("published")
