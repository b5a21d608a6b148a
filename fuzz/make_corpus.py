#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Run by `bash scripts/fuzz.sh corpus` (Debian's python3 with pymongo's bson).
Seeds are small hand-made inputs: valid and invalid cache documents (real
BSON from pymongo), ingest bodies, ids, uuids and query strings. Inputs that
crash or break an invariant do not belong here but in fuzz/regressions/.
"""

import datetime
import json
import os
import re
import shutil
import struct
import sys

import bson
from bson import (Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId,
                  Regex, SON, Timestamp)

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def uuid(n, upper=False):
    s = "%08x-0000-4000-8000-%012x" % (n, n)
    return s.upper() if upper else s


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pass_doc(n, **kw):
    d = SON([("pass_uuid", uuid(n)), ("timestamp", Int64(1732000000000 + n)),
             ("status", "active"), ("free_ticket_status", 0),
             ("payload", {"fare": 275, "zones": [1, 2]}),
             ("payload_hash", "ab" * 32)])
    d.update(kw)
    return d


def nested(depth, leaf=1):
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"n": v}
    return v


# raw BSON helpers, for what pymongo refuses to write
def e_string(key, raw):
    return b"\x02" + key + b"\x00" + struct.pack("<i", len(raw) + 1) + raw + b"\x00"


def e_int32(key, v):
    return b"\x10" + key + b"\x00" + struct.pack("<i", v)


def e_array(key, elems):
    return b"\x04" + key + b"\x00" + raw_doc(elems)


def e_doc(key, elems):
    return b"\x03" + key + b"\x00" + raw_doc(elems)


def raw_doc(elems):
    body = b"".join(elems) + b"\x00"
    return struct.pack("<i", len(body) + 4) + body


def bson_seeds():
    t = "fuzz_bson"
    now = Int64(1732200000000)
    docs = {
        "entry-int64": SON([("user_id", Int64(12345)), ("timestamp", now),
                            ("passes", [pass_doc(1), pass_doc(2, status="expired")]),
                            ("passes4", [pass_doc(3)])]),
        "entry-int32-double-ts": {"user_id": 7, "timestamp": 1732200000000.0,
                                  "passes": [pass_doc(4)], "passes4": []},
        "entry-double-user": {"user_id": 12345.0, "timestamp": 1.5e12,
                              "passes": [], "passes4": [pass_doc(5, status="used")]},
        "entry-no-arrays": {"user_id": 1, "timestamp": now},
        "entry-no-timestamp": {"user_id": 1, "passes": [pass_doc(6)]},
        "entry-incomplete": {"user_id": 9, "timestamp": now, "bytemark_incomplete": True,
                             "passes": [pass_doc(7)]},
        "entry-logs": {"user_id": 2, "timestamp": now, "passes": [pass_doc(8)],
                       "passesLog": [{"server_time": "2024-11-21T14:40:00.000Z",
                                      "data": {"op": "upsert", "pass_uuid": uuid(8)}}],
                       "extra": {"kept": True}},
        "entry-upper-uuid": {"user_id": 3, "timestamp": now,
                             "passes": [pass_doc(9, pass_uuid=uuid(9, upper=True))]},
        "entry-unknown-fields": {"user_id": 3, "timestamp": now,
                                 "passes": [pass_doc(10, zone="A", tags=["x", "y"],
                                                     nested={"a": {"b": [1, 2.5, None]}})]},
        "types-all": {"user_id": 4, "timestamp": now, "passes": [pass_doc(
            11, payload={
                "oid": ObjectId("65f0c0ffee0000000000abcd"),
                "date": datetime.datetime(2024, 11, 21, 14, 40, tzinfo=datetime.timezone.utc),
                "dec": Decimal128("12.345"), "bin": Binary(b"\x00\x01\xff", 0),
                "uuidbin": Binary(b"0123456789abcdef", 4),
                "re": Regex("^a.*b$", "i"), "code": Code("function(){return 1}"),
                "cws": Code("f(x)", {"x": 1}), "ts": Timestamp(1732200000, 7),
                "min": MinKey(), "max": MaxKey(), "bool": False, "null": None,
                "i64": Int64(-9007199254740993), "dbl": 0.1, "negzero": -0.0,
                "big": 9007199254740992.0, "nan": float("nan"), "inf": float("inf"),
            })]},
        "date-extremes": {"user_id": 5, "passes": [pass_doc(12, payload={
            "d1": datetime.datetime(1, 1, 1), "d2": datetime.datetime(9999, 12, 31),
            "d0": datetime.datetime(1970, 1, 1)})]},
        "wrong-passes-object": {"user_id": 6, "timestamp": now, "passes": {"0": pass_doc(13)}},
        "wrong-passes4-string": {"user_id": 6, "timestamp": now, "passes4": "nope"},
        "wrong-pass-not-object": {"user_id": 6, "timestamp": now, "passes": [pass_doc(14), 5, "x"]},
        "wrong-pass-no-uuid": {"user_id": 6, "timestamp": now,
                               "passes": [{"status": "active"}]},
        "wrong-uuid-types": {"user_id": 6, "timestamp": now,
                             "passes": [pass_doc(15, pass_uuid=15), pass_doc(16, pass_uuid=None),
                                        pass_doc(17, pass_uuid="short"),
                                        pass_doc(18, status=7)]},
        "wrong-timestamp-string": {"user_id": 6, "timestamp": "yesterday", "passes": []},
        "wrong-timestamp-bool": {"user_id": 6, "timestamp": True},
        "wrong-user-string": {"user_id": "6", "timestamp": now, "passes": []},
        "deep-60": {"user_id": 7, "timestamp": now, "passes": [pass_doc(19, payload=nested(60))]},
        "deep-70": {"user_id": 7, "timestamp": now, "passes": [pass_doc(20, payload=nested(70))]},
        "many-passes": {"user_id": 8, "timestamp": now,
                        "passes": [pass_doc(100 + i, status=("active", "expired", "used")[i % 3])
                                   for i in range(40)]},
        "operators-as-data": {"user_id": 8, "timestamp": now, "passes": [pass_doc(
            21, status="' OR 1=1 --", payload={"$gt": "", "$where": "sleep(1000)",
                                                 "a.b": {"$ne": None}})]},
        "unicode": {"user_id": 9, "timestamp": now, "passes": [pass_doc(
            22, status="\u00e9t\u00e9 \U0001f68c", payload={"\u540d": "\u0000nul"})]},
    }
    for name, d in docs.items():
        write(t, name + ".bson", bson.encode(d))

    # what pymongo will not write: duplicate keys, invalid UTF-8, bad arrays
    p = raw_doc([e_string(b"pass_uuid", uuid(30).encode()), e_string(b"status", b"active")])
    write(t, "raw-duplicate-passes.bson", raw_doc([
        e_int32(b"user_id", 1), e_array(b"passes", [b"\x03" + b"0\x00" + p]),
        e_array(b"passes", [b"\x03" + b"0\x00" + p, b"\x03" + b"1\x00" + p])]))
    write(t, "raw-invalid-utf8-value.bson", raw_doc([
        e_array(b"passes", [e_doc(b"0", [e_string(b"status", b"\xc3\x28\xff")])])]))
    write(t, "raw-invalid-utf8-key.bson", raw_doc([
        e_array(b"passes", [e_doc(b"0", [e_string(b"st\xff", b"x")])])]))
    write(t, "raw-nul-in-string.bson", raw_doc([
        e_array(b"passes", [e_doc(b"0", [e_string(b"status", b"a\x00b")])])]))
    write(t, "raw-array-odd-keys.bson", raw_doc([
        e_array(b"passes", [e_doc(b"7", [e_string(b"pass_uuid", uuid(31).encode())]),
                            e_doc(b"x", [])])]))
    write(t, "raw-empty.bson", raw_doc([]))
    write(t, "raw-truncated.bson", bson.encode({"passes": [pass_doc(32)]})[:-9])


# --- fuzz_bson_struct: the little builder language of fuzz_bson_struct.c --------

KEYS = ["passes", "passes4", "timestamp", "user_id", "bytemark_incomplete",
        "pass_uuid", "status", "payload", "payload_hash", "free_ticket_status",
        "passesLog", "passes4Log", "_id", "version", "$gt", "$where", "",
        "a.b", "\u00e9t\u00e9"]


def k(name):
    return bytes([KEYS.index(name)])


IDX = b"\x00"          # an index key inside an array
OPEN_DOC, OPEN_ARR, CLOSE = 4, 5, 6


def op(code, key, payload=b""):
    return bytes([code]) + key + payload


def struct_pass(n, status=0):
    return (op(OPEN_DOC, IDX) + op(22, k("pass_uuid"), bytes([n]))
            + op(23, k("status"), bytes([status]))
            + op(2, k("timestamp"), struct.pack("<q", 1732000000000))
            + op(1, k("free_ticket_status"), struct.pack("<i", 0))
            + op(OPEN_DOC, k("payload")) + op(3, k("status"), b"\x03abc") + bytes([CLOSE])
            + bytes([CLOSE]))


def struct_seeds():
    t = "fuzz_bson_struct"
    ts = op(2, k("timestamp"), struct.pack("<q", 1732200000000))
    write(t, "entry", op(2, k("user_id"), struct.pack("<q", 1)) + ts
          + op(OPEN_ARR, k("passes")) + struct_pass(1) + struct_pass(0x82, 1) + bytes([CLOSE])
          + op(OPEN_ARR, k("passes4")) + struct_pass(3, 2) + bytes([CLOSE]))
    write(t, "types", op(OPEN_ARR, k("passes")) + op(OPEN_DOC, IDX)
          + b"".join(op(c, k("payload"), bytes(range(1, 40))) for c in range(0, 32)
                     if c not in (OPEN_DOC, OPEN_ARR, CLOSE))
          + bytes([CLOSE, CLOSE]))
    write(t, "doubles", op(OPEN_ARR, k("passes")) + op(OPEN_DOC, IDX)
          + b"".join(op(24, bytes([0xf0]) + b"\x02d" + bytes([48 + i]), bytes([i]))
                     for i in (0, 1, 2, 5, 6, 7)) + bytes([CLOSE, CLOSE]))
    write(t, "deep", op(OPEN_ARR, k("passes")) + op(OPEN_DOC, IDX)
          + op(OPEN_DOC, k("payload")) * 70)
    write(t, "incomplete", op(7, k("bytemark_incomplete"), b"\x01") + ts
          + op(OPEN_ARR, k("passes")) + struct_pass(2) + bytes([CLOSE]))
    write(t, "wrong", op(3, k("passes"), b"\x01x") + op(OPEN_DOC, k("passes4"))
          + bytes([CLOSE]) + op(3, k("timestamp"), b"\x01x"))
    write(t, "bad-utf8", op(OPEN_ARR, k("passes")) + op(OPEN_DOC, IDX)
          + op(3, k("status"), b"\x02\xc3\x28") + bytes([CLOSE, CLOSE]))
    # every value type as "passes", as "timestamp" and as a pass
    scalar = {0: struct.pack("<d", 1.5), 1: struct.pack("<i", 7), 2: struct.pack("<q", 7),
              3: b"\x03abc", 7: b"\x01", 8: b"", 9: struct.pack("<q", 1732200000000),
              10: bytes(12), 11: bytes(16), 12: b"\x00\x02ab", 13: b"\x01a\x01i",
              14: b"\x02f()", 15: b"\x03sym", 16: bytes(8), 17: b"", 18: b"", 19: b"",
              20: b"\x01c" + bytes(12), 21: b"\x02g()", 24: b"\x05", 25: b"\x00"}
    for code, payload in sorted(scalar.items()):
        write(t, "passes-type-%02d" % code, ts + op(code, k("passes"), payload))
        write(t, "timestamp-type-%02d" % code, op(code, k("timestamp"), payload)
              + op(OPEN_ARR, k("passes")) + struct_pass(4) + bytes([CLOSE]))
        write(t, "pass-type-%02d" % code, ts + op(OPEN_ARR, k("passes4")) + op(code, IDX, payload)
              + struct_pass(5) + bytes([CLOSE]))
    write(t, "many-passes", ts + op(OPEN_ARR, k("passes"))
          + b"".join(struct_pass(i % 8, i % 4) for i in range(60)) + bytes([CLOSE]))
    write(t, "raw-keys", op(OPEN_ARR, k("passes")) + op(OPEN_DOC, IDX)
          + op(3, bytes([0xf0]) + b"\x03\xff\xfe\xfd", b"\x01x")
          + op(3, bytes([0xf0]) + b"\x01$", b"\x01x") + bytes([CLOSE, CLOSE]))
    struct_diff_seeds(t, ts)


def raw_key(name):
    return bytes([0xf0, len(name)]) + name


def utf8(key, raw):
    return op(3, key, bytes([len(raw)]) + raw)


def pass_with(*elems, n=1):
    return (op(OPEN_DOC, IDX) + op(22, k("pass_uuid"), bytes([n]))
            + b"".join(elems) + bytes([CLOSE]))


def struct_diff_seeds(t, ts):
    """What the canonical writer (render.c) must write exactly as the old
    jansson path did (fuzz/reference.c): reals, escapes, key order,
    duplicate keys, and the statuses and uuids filters and lookups see."""
    reals = [0.1, 1.5, -2.5e-7, 1e-5, 5e-324, 2.0 ** 60, 1e17, 1e20,
             9007199254740994.0, 1.7976931348623157e308, -1e-300,
             123456789.125, 2.0 ** 53, -(2.0 ** 53), 4503599627370497.5, 0.5]
    write(t, "diff-reals", ts + op(OPEN_ARR, k("passes"))
          + pass_with(op(OPEN_ARR, k("payload"))
                      + b"".join(op(0, IDX, struct.pack("<d", d)) for d in reals)
                      + bytes([CLOSE]))
          + bytes([CLOSE]))
    write(t, "diff-escapes", ts + op(OPEN_ARR, k("passes"))
          + pass_with(utf8(k("status"), b"\x01\x08\t\n\x0c\r\x1f\"\\/\x7f\xc3\xa9\xe2\x80\xa8"),
                      utf8(k("payload"), b"a\x00b\x00"),
                      utf8(raw_key(b"k\x01\x1f\"\\\x7f"), b"\x01v"))
          + bytes([CLOSE]))
    write(t, "diff-duplicate-keys", ts + op(OPEN_ARR, k("passes4"))
          + pass_with(op(23, k("status"), b"\x00"), op(22, k("pass_uuid"), b"\x02"),
                      op(23, k("status"), b"\x02"), utf8(k("pass_uuid"), b"x"),
                      op(OPEN_DOC, k("payload")) + utf8(raw_key(b"b"), b"\x011")
                      + utf8(raw_key(b"a"), b"\x012") + utf8(raw_key(b"b"), b"\x013")
                      + bytes([CLOSE]),
                      op(1, k("payload"), struct.pack("<i", 1)))
          + pass_with(op(23, k("status"), b"\x01"), op(8, k("status")), n=3)
          + bytes([CLOSE]))
    keys = [b"a", b"ab", b"a\x7f", b"\xc3\xa9", b"B", b"", b"a\x01", b"ab\xc3\xa9"]
    keys += [b"k%02d" % i for i in range(39, -1, -1)]
    write(t, "diff-key-order", ts + op(OPEN_ARR, k("passes"))
          + pass_with(op(OPEN_DOC, k("payload"))
                      + b"".join(op(1, raw_key(key), struct.pack("<i", i))
                                 for i, key in enumerate(keys))
                      + bytes([CLOSE]))
          + bytes([CLOSE]))
    statuses = [b"x1", b"x2", b"x3", b"ab", b"abc", b"a", b"no-such-status-2",
                b"s" * 32, b"t" * 33, b"a\tb", b"x1"]
    write(t, "diff-filter", ts + op(OPEN_ARR, k("passes"))
          + b"".join(pass_with(utf8(k("status"), st), n=i) for i, st in enumerate(statuses))
          + pass_with(op(1, k("status"), struct.pack("<i", 1)), n=7)
          + bytes([CLOSE]) + op(OPEN_ARR, k("passes4"))
          + pass_with(utf8(k("status"), b"t" * 33), n=1)
          + pass_with(utf8(k("status"), b"ab"), n=2)
          + bytes([CLOSE]))
    write(t, "diff-uuids", ts + op(OPEN_ARR, k("passes"))
          + pass_with(op(23, k("status"), b"\x00"), n=0x81)
          + pass_with(utf8(k("pass_uuid"), b"z" * 36), n=4)
          + bytes([CLOSE]) + op(OPEN_ARR, k("passes4"))
          + pass_with(op(23, k("status"), b"\x01"), n=1)
          + pass_with(op(8, k("pass_uuid")), n=2)
          + pass_with(n=4)
          + bytes([CLOSE]))


# --- fuzz_ingest: request bodies ----------------------------------------------------

def ingest_seeds():
    t = "fuzz_ingest"
    good = {"pass_uuid": uuid(1), "status": "active"}
    full = {"pass_uuid": uuid(2).upper(), "status": "expired", "version": 4,
            "free_ticket_status": -128, "payload": {"b": [1, 2.5, None, True], "a": "x/y"},
            "timestamp": 1732200000000, "payload_hash": "ff" * 32}
    bodies = {
        "one": good,
        "full": full,
        "batch": [good, full, dict(good, pass_uuid=uuid(3), version=3)],
        "batch-100": [dict(good, pass_uuid=uuid(i)) for i in range(100)],
        "batch-101": [dict(good, pass_uuid=uuid(i)) for i in range(101)],
        "empty-array": [],
        "empty-object": {},
        "unknown-field": dict(good, colour="red"),
        "unknown-long-field": dict(good, **{"\u00e9" * 40: 1}),
        "missing-uuid": {"status": "active"},
        "missing-status": {"pass_uuid": uuid(4)},
        "bad-uuid": dict(good, pass_uuid="not-a-uuid"),
        "uuid-number": dict(good, pass_uuid=12),
        "status-33": dict(good, status="x" * 33),
        "status-32-multibyte": dict(good, status="\u00e9" * 32),
        "status-control": dict(good, status="a\tb"),
        "status-empty": dict(good, status=""),
        "status-sql": dict(good, status="' OR 1=1 --"),
        "status-mongo": dict(good, status="{\"$gt\": \"\"}"),
        "version-5": dict(good, version=5),
        "version-string": dict(good, version="3"),
        "version-real": dict(good, version=3.0),
        "fts-range": dict(good, free_ticket_status=128),
        "ts-negative": dict(good, timestamp=-1),
        "ts-huge": dict(good, timestamp=2 ** 63 - 1),
        "hash-65": dict(good, payload_hash="a" * 65),
        "hash-empty": dict(good, payload_hash=""),
        "hash-number": dict(good, payload_hash=5),
        "payload-null": dict(good, payload=None),
        "payload-string": dict(good, payload="\"; DROP TABLE bytemark_pass; --"),
        "payload-operators": dict(good, payload={"$where": "1", "$gt": "", "a.b": 1}),
        "payload-deep-60": dict(good, payload=nested(60)),
        "payload-unicode": dict(good, payload={"z": "\U0001f68c", "\u540d": "\u00e9"}),
        "payload-numbers": dict(good, payload=[0, -0.0, 1.5, -1e-300, 2 ** 63 - 1, -2 ** 63]),
        "not-a-pass": [good, 5],
        "scalar": 5,
        "string": "pass",
    }
    for name, b in bodies.items():
        write(t, name + ".json", json.dumps(b, ensure_ascii=False))
    raw = {
        "empty": b"",
        "spaces": b"  \n",
        "truncated": b'{"pass_uuid": "' + uuid(5).encode(),
        "trailing": json.dumps(good).encode() + b" x",
        "duplicate-key": b'{"pass_uuid":"%s","status":"a","status":"b"}' % uuid(6).encode(),
        "nul-escape": b'{"pass_uuid":"%s","status":"a\\u0000b"}' % uuid(7).encode(),
        "nul-in-payload": b'{"pass_uuid":"%s","status":"a","payload":"\\u0000"}' % uuid(7).encode(),
        "nul-key": b'{"pass_uuid":"%s","status":"a","\\u0000":1}' % uuid(7).encode(),
        "raw-nul": b'{"pass_uuid":"%s","status":"a\x00b"}' % uuid(7).encode(),
        "invalid-utf8": b'{"pass_uuid":"%s","status":"\xc3\x28"}' % uuid(8).encode(),
        "overlong-utf8": b'{"pass_uuid":"%s","status":"\xc0\xaf"}' % uuid(8).encode(),
        "lone-surrogate": b'{"pass_uuid":"%s","status":"\\ud800"}' % uuid(8).encode(),
        "deep-brackets": b"[" * 3000 + b"]" * 3000,
        "deep-unclosed": b"[" * 10000,
        "bom": b"\xef\xbb\xbf" + json.dumps(good).encode(),
        "big-number": b'{"pass_uuid":"%s","status":"a","timestamp":1e400}' % uuid(9).encode(),
        "int-overflow": b'{"pass_uuid":"%s","status":"a","timestamp":99999999999999999999}' % uuid(9).encode(),
        "long-key-cut": b'{"' + "\u00e9".encode() * 23 + b'xyz":1}',
    }
    # the bytes are also a MySQL payload column (render_payload(), and its
    # fast path json_canonical()): canonical texts as jansson writes them,
    # reals as "%.17g", and texts that look canonical but are not
    raw.update({
        "payload-text-canonical":
            b'{"a":[1.5,0.10000000000000001,-2.4999999999999999e-7,'
            b'1.0000000000000001e-5,4.9406564584124654e-324,1e20,'
            b'9007199254740994.0,1.152921504606847e18],"b":{"":null,'
            b'"c":"\\u001F\\n\\t\\"\\\\/\\u0000\xc3\xa9\x7f","d":true,"e":false},'
            b'"e":-123456789012345678,"\xc3\xa9":[]}',
        "payload-text-real": b"0.10000000000000001",
        "payload-text-string": b'"\\u001F\\b"',
        "payload-text-nested": b'{"a":{"b":{"c":[[],{}]}},"b":[{"a":1,"b":2}],"ba":0}',
        "payload-text-shortest-real": b"0.1",
        "payload-text-integral-reals": b"[1.0,-0.0,1e5,2.5E3,0e0]",
        "payload-text-minus-zero": b"-0",
        "payload-text-unsorted": b'{"b":1,"a":2}',
        "payload-text-prefix-keys": b'{"ab":1,"a":2}',
        "payload-text-duplicate": b'{"a":1,"a":2}',
        "payload-text-lower-hex": b'"\\u001f"',
        "payload-text-short-escape-as-u": b'"\\u000A"',
        "payload-text-tab-as-u": b'"\\u0009"',
        "payload-text-del-as-u": b'"\\u007F"',
        "payload-text-slash-escape": b'"\\/"',
        "payload-text-19-digits": b"1234567890123456789",
        "payload-text-19-digits-overflow": b"9999999999999999999",
        "payload-text-too-big": b"[99999999999999999999,1e400]",
        "payload-text-blanks": b'{ "a" : 1 }',
        "payload-text-key-escape": b'{"\\n":1,"\\u0041":2}',
        "payload-text-not-json": b"not json \xc3\xa9",
        "payload-text-not-utf8": b"\xff\xfe",
        "payload-text-nul": b'"a\\u0000b"',
        "payload-text-deep-64": b"[" * 64 + b"]" * 64,
        "payload-text-deep-65": b"[" * 65 + b"]" * 65,
    })
    for name, b in raw.items():
        write(t, name + ".json", b)


# --- fuzz_input: ids, uuids, query strings --------------------------------------------

def input_seeds():
    t = "fuzz_input"
    seeds = [
        "12345", "1", "0", "01", "-1", "+1", " 1", "1 ", "9007199254740991",
        "9007199254740992", "99999999999999999999", "18446744073709551617",
        "%31%32", "1e3", "0x10", "\u0661\u0662", "12\x003",
        uuid(1), uuid(1, upper=True), uuid(1)[:-1], uuid(1) + "0",
        uuid(1).replace("-", ""), "{" + uuid(1) + "}", uuid(1).replace("-", "_"),
        "g" * 8 + uuid(1)[8:], "%41" + uuid(1)[3:],
        "status=active", "status=active,expired", "status=a%2Cb", "status=a+b",
        "status=%zz", "status=%", "status=%4", "status=", "status=,", "status=a,,b",
        "status=%00", "status=%1f", "status=%7f", "status=" + "x" * 32,
        "status=" + "x" * 33, "status=" + "%41" * 32, "status=%C3%A9t%C3%A9",
        "version=3", "version=4", "version=all", "version=ALL", "version=5",
        "version=", "version=%33", "version=3&version=4", "Version=4",
        "user_id=1&status=active&version=3", "status=active&status=expired",
        "xstatus=a&status=b", "status=' OR 1=1 --", "status={\"$gt\": \"\"}",
        "status=%27%20OR%201%3D1%20--", "version=3%00",
    ]
    for i, s in enumerate(seeds):
        name = "%02d-%s" % (i, re.sub(r"[^A-Za-z0-9=,.-]+", "_", s)[:40])
        write(t, name, s)


def main():
    for t in ("fuzz_bson", "fuzz_bson_struct", "fuzz_ingest", "fuzz_input"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    bson_seeds()
    struct_seeds()
    ingest_seeds()
    input_seeds()
    for t in sorted(os.listdir(CORPUS)):
        print("fuzz/corpus/%s: %d seeds" % (t, len(os.listdir(os.path.join(CORPUS, t)))))


if __name__ == "__main__":
    sys.exit(main())
