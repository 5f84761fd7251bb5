"""Reads topics as a Java consumer with Confluent's deserializers would.

Consumes every committed record of the given topics from the start
(isolation.level=read_committed, through librdkafka), decodes each value
with Confluent's AvroDeserializer or JSONDeserializer (chosen by the schema
type the registry reports for the value's schema id, which the deserializers
read from the wire format's header themselves), and prints one JSON line
per record:

  {"topic": ..., "partition": ..., "offset": ..., "key": ...,
   "schema_id": ..., "schema_type": ..., "value": <decoded>}

A value that is not in the wire format is printed with "schema_id": null
and "raw" (its text). It stops once every partition is read to its end.
The test that calls it (cmd/outbox TestSchemaWireJavaFormat) compares the
decoded values with the payloads written to the outbox.

usage: read.py --brokers HOST:PORT --registry URL --topic T [--topic T ...]
"""

import argparse
import json
import struct
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    avro = AvroDeserializer(registry)
    js = JSONDeserializer(None, schema_registry_client=registry)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "confluent-read-%d" % time.time_ns(),
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    parts = []
    for topic in args.topic:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        if md.error is not None:
            raise KafkaException(md.error)
        for p in md.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > 0:
                parts.append(TopicPartition(topic, p, 0))
    consumer.assign(parts)
    left = {(tp.topic, tp.partition) for tp in parts}
    types = {}
    deadline = time.time() + args.timeout
    while left:
        if time.time() > deadline:
            print("read.py: timed out with partitions left: %s" % sorted(left), file=sys.stderr)
            sys.exit(1)
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                left.discard((msg.topic(), msg.partition()))
                continue
            raise KafkaException(msg.error())
        out = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
               "key": msg.key().decode() if msg.key() is not None else None}
        value = msg.value()
        if value and len(value) >= 5 and value[0] == 0:
            sid = struct.unpack(">I", value[1:5])[0]
            if sid not in types:
                types[sid] = registry.get_schema(sid).schema_type or "AVRO"
            ctx = SerializationContext(msg.topic(), MessageField.VALUE)
            out["schema_id"], out["schema_type"] = sid, types[sid]
            out["value"] = (js if types[sid] == "JSON" else avro)(value, ctx)
        else:
            out["schema_id"], out["raw"] = None, (value or b"").decode("utf-8", "replace")
        print(json.dumps(out, sort_keys=True))
    consumer.close()


if __name__ == "__main__":
    main()
