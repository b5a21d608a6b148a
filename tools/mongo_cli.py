#!/usr/bin/python3
"""Tiny MongoDB command line for the tests and the demo.

Usage:
  mongo_cli.py URI DB COLL insert '<ejson doc or array of docs>'
  mongo_cli.py URI DB COLL find ['<filter>']      one canonical EJSON doc per line
  mongo_cli.py URI DB COLL count ['<filter>']
  mongo_cli.py URI DB COLL update '<filter>' '<update>' [upsert]
  mongo_cli.py URI DB COLL delete ['<filter>']    prints the number deleted
  mongo_cli.py URI DB COLL drop                   drops the collection
  mongo_cli.py URI DB COLL drop-db                drops the whole database
  mongo_cli.py URI DB COLL index-unique FIELD     unique ascending index on FIELD
  mongo_cli.py URI DB COLL server-status          prints connections.current
  mongo_cli.py URI DB COLL op-count [NAME]        prints opcounters.NAME (default
                                                  query: find commands), -1 if
                                                  the server keeps no such count
  mongo_cli.py URI DB COLL ping

All JSON in and out is MongoDB Extended JSON (bson.json_util): input may be
relaxed or canonical ({"$numberLong": "5"}, {"$numberDouble": "1.5"} keep their
types; a plain integer becomes int32 or int64 by size, as pymongo does), output
is canonical so the BSON types are visible. A JSON argument given as "-" is
read from stdin, "@FILE" from FILE (Linux caps one argument at 128 KiB).
Errors go to stderr, exit status 1; usage errors exit 2.

Must run with /usr/bin/python3 (Debian's python3-pymongo).
"""

import os
import sys

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions, JSONMode
import pymongo

USAGE = __doc__.split("\n\n")[1]

# Parse input as relaxed EJSON: canonical wrappers are honoured, and
# {"$date": ...} etc. become the matching BSON types.
IN_OPTS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True)


def finish(code):
    # os._exit: a normal interpreter exit joins pymongo's monitor threads,
    # which costs half a second per call -- noticeable over a test suite.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def die(msg, code=1):
    sys.stderr.write("mongo_cli: %s\n" % msg)
    finish(code)


def parse(text, what):
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    try:
        return json_util.loads(text, json_options=IN_OPTS)
    except Exception as e:  # ValueError, bson errors ...
        die("cannot parse %s as Extended JSON: %s" % (what, e), 2)


def out(doc):
    sys.stdout.write(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS) + "\n")


def main(argv):
    if len(argv) < 5:
        die(USAGE, 2)
    uri, dbname, collname, cmd = argv[1:5]
    args = argv[5:]

    # Short timeouts: a test must learn quickly that the server is gone.
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000,
                                 connectTimeoutMS=5000, socketTimeoutMS=30000)
    db = client[dbname]
    coll = db[collname]

    if cmd == "insert":
        if len(args) != 1:
            die("insert needs one document or array", 2)
        docs = parse(args[0], "document")
        if isinstance(docs, dict):
            docs = [docs]
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            die("insert wants an object or an array of objects", 2)
        if docs:
            res = coll.insert_many(docs, ordered=True)
            for oid in res.inserted_ids:
                out({"_id": oid})
    elif cmd in ("find", "count", "delete"):
        flt = parse(args[0], "filter") if args else {}
        if not isinstance(flt, dict):
            die("the filter must be an object", 2)
        if cmd == "find":
            for doc in coll.find(flt).sort("_id", 1):
                out(doc)
        elif cmd == "count":
            print(coll.count_documents(flt))
        else:
            print(coll.delete_many(flt).deleted_count)
    elif cmd == "update":
        if len(args) not in (2, 3):
            die("update needs a filter and an update document", 2)
        flt = parse(args[0], "filter")
        upd = parse(args[1], "update")
        upsert = len(args) == 3 and args[2] == "upsert"
        res = coll.update_many(flt, upd, upsert=upsert)
        print(res.modified_count + (1 if res.upserted_id is not None else 0))
    elif cmd == "drop":
        coll.drop()
    elif cmd == "drop-db":
        client.drop_database(dbname)
    elif cmd == "index-unique":
        if len(args) != 1:
            die("index-unique needs a field name", 2)
        print(coll.create_index([(args[0], pymongo.ASCENDING)], unique=True))
    elif cmd == "server-status":
        st = client.admin.command("serverStatus")
        print(int(st["connections"]["current"]))
    elif cmd == "op-count":
        name = args[0] if args else "query"
        st = client.admin.command("serverStatus")
        print(int(st.get("opcounters", {}).get(name, -1)))
    elif cmd == "ping":
        client.admin.command("ping")
        print("ok")
    else:
        die("unknown command %r\n%s" % (cmd, USAGE), 2)
    client.close()


if __name__ == "__main__":
    try:
        main(sys.argv)
    except pymongo.errors.PyMongoError as e:
        die("%s: %s" % (type(e).__name__, e))
    except KeyboardInterrupt:
        die("interrupted")
    finish(0)
