"""Decodes Confluent wire-format Avro records with the Apache Avro Python library, independently of
outboxd's encoder: each record's schema is fetched by its id from the registry, and the decoded
value is written back in Kafka Connect JsonConverter's JSON (bytes and decimals in base64, dates as
days, times and timestamps in milliseconds (timestamp-micros in microseconds), maps as objects,
NaN and the infinities as strings), so that it can be compared with the JSON events of the same
changes.

    python3 avro_decode.py REGISTRY_URL < records.json > decoded.json

Input: a JSON list of hex strings (null for a null key or value). Output: a JSON list of
{"id": schema id, "value": decoded} (null for null).
"""

import base64
import datetime
import io
import json
import math
import struct
import sys
import urllib.request

import avro.io
import avro.schema

EPOCH_DATE = datetime.date(1970, 1, 1)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def shortest_float32(value):
    """The shortest decimal that reads back as the same 32-bit float (as Java prints a float)."""
    for digits in range(1, 18):
        text = "%.*g" % (digits, value)
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
            return float(text)
    return value


def to_json(schema, value):
    if isinstance(schema, avro.schema.UnionSchema):
        if value is None:
            return None
        branch = next(s for s in schema.schemas if s.type != "null")
        return to_json(branch, value)
    if value is None:
        return None
    kind = schema.type
    logical = getattr(schema, "logical_type", None)
    if kind == "record":
        return {f.name: to_json(f.type, value.get(f.name)) for f in schema.fields}
    if kind == "array":
        return [to_json(schema.items, v) for v in value]
    if kind == "map":
        return {k: to_json(schema.values, v) for k, v in value.items()}
    if kind == "bytes":
        if logical == "decimal":
            unscaled = int(value.scaleb(schema.get_prop("scale")))
            # Java's BigInteger.toByteArray: the shortest two's complement.
            length = (unscaled if unscaled >= 0 else ~unscaled).bit_length() // 8 + 1
            value = unscaled.to_bytes(length, "big", signed=True)
        return base64.b64encode(value).decode()
    if logical == "date":
        return (value - EPOCH_DATE).days
    if logical == "time-millis":
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 + value.microsecond // 1000
    if logical == "timestamp-millis":
        delta = value - EPOCH
        return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    if logical == "timestamp-micros":
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if kind in ("float", "double"):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return shortest_float32(value) if kind == "float" else value
    return value


def main():
    base = sys.argv[1].rstrip("/")
    schemas = {}
    out = []
    for text in json.load(sys.stdin):
        if text is None:
            out.append(None)
            continue
        data = bytes.fromhex(text)
        if data[0] != 0:
            raise SystemExit(f"magic byte {data[0]}, not 0")
        schema_id = int.from_bytes(data[1:5], "big")
        if schema_id not in schemas:
            with urllib.request.urlopen(f"{base}/schemas/ids/{schema_id}") as answer:
                schemas[schema_id] = avro.schema.parse(json.load(answer)["schema"])
        schema = schemas[schema_id]
        decoder = avro.io.BinaryDecoder(io.BytesIO(data[5:]))
        value = avro.io.DatumReader(schema).read(decoder)
        out.append({"id": schema_id, "value": to_json(schema, value)})
    json.dump(out, sys.stdout)


main()
