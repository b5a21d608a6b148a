#!/usr/bin/python3
"""Checks tools/mongo_standin.py with a real driver (Debian's pymongo 3.11) and raw sockets.

    /usr/bin/python3 tools/test_mongo_standin.py [-v]

Starts the stand-in on a free port, runs the checks, stops it with SIGTERM (and checks it
exits promptly). Exit status 0 = all passed.
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

import bson
from bson.codec_options import CodecOptions
from bson.int64 import Int64
import pymongo
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure, WriteError

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
SERVER = None
PORT = None


def setUpModule():
    global SERVER, PORT
    started = time.time()
    SERVER = subprocess.Popen([PYTHON, os.path.join(HERE, 'mongo_standin.py'), '--host', '127.0.0.1',
                               '--port', '0'], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'))
    line = SERVER.stdout.readline()
    assert line.startswith('mongo-standin listening on 127.0.0.1:'), line
    PORT = int(line.rsplit(':', 1)[1])
    print('stand-in up on port %d after %.2fs' % (PORT, time.time() - started), file=sys.stderr)


def tearDownModule():
    SERVER.terminate()
    started = time.time()
    rc = SERVER.wait(timeout=5)
    assert rc == 0, 'stand-in exited with %r' % rc
    assert time.time() - started < 2, 'SIGTERM took too long'


def client(**kw):
    return pymongo.MongoClient('127.0.0.1', PORT, serverSelectionTimeoutMS=2000, **kw)


# -- raw wire helpers (for what a driver never does on purpose)

def op_msg(doc, request_id=1, flags=0, sequences=None, checksum=False):
    body = b'\0' + bson.encode(doc)
    for ident, docs in (sequences or {}).items():
        payload = ident.encode() + b'\0' + b''.join(bson.encode(d) for d in docs)
        body += b'\1' + struct.pack('<i', 4 + len(payload)) + payload
    if checksum:
        flags |= 1
    msg = struct.pack('<I', flags) + body + (b'\xde\xad\xbe\xef' if checksum else b'')
    return struct.pack('<iiii', 16 + len(msg), request_id, 0, 2013) + msg


def op_query_cmd(ns, doc, request_id=1):
    msg = struct.pack('<i', 0) + ns.encode() + b'\0' + struct.pack('<ii', 0, -1) + bson.encode(doc)
    return struct.pack('<iiii', 16 + len(msg), request_id, 0, 2004) + msg


def read_reply(sock):
    def exact(n):
        buf = b''
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, 'connection closed'
            buf += chunk
        return buf
    length, _, response_to, opcode = struct.unpack('<iiii', exact(16))
    payload = exact(length - 16)
    if opcode == 1:     # OP_REPLY: flags, cursorID, startingFrom, numberReturned, docs
        assert struct.unpack_from('<i', payload, 16)[0] == 1
        return response_to, bson.decode(payload[20:])
    assert opcode == 2013, opcode
    return response_to, bson.decode(payload[5:])


def server_connections(c):
    return c.admin.command('serverStatus')['connections']['current']


class StandinTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.client = client()
        cls.db = cls.client.cache

    def setUp(self):
        self.coll = self.db[self._testMethodName]
        self.coll.drop()

    def test_handshake(self):
        hello = self.client.admin.command('hello')
        self.assertTrue(hello['isWritablePrimary'])
        self.assertTrue(hello['helloOk'])
        self.assertEqual(hello['maxWireVersion'], 13)
        self.assertEqual(hello['maxBsonObjectSize'], 16777216)
        self.assertNotIn('setName', hello)
        legacy = self.client.admin.command('isMaster')
        self.assertTrue(legacy['ismaster'])
        self.assertEqual(self.client.server_info()['version'], '5.0.0-standin')
        self.assertEqual(self.client.admin.command('ping')['ok'], 1.0)
        with self.assertRaises(OperationFailure) as cm:
            self.client.admin.command('noSuchCommand')
        self.assertEqual(cm.exception.code, 59)

    def test_insert_find_projection_sort(self):
        self.coll.insert_many([{'user_id': i, 'name': 'u%d' % i, 'passesLog': [1, 2]} for i in range(10)])
        docs = list(self.coll.find({'user_id': {'$gte': 3, '$lt': 7}}, {'passesLog': 0, '_id': 0})
                    .sort('user_id', -1))
        self.assertEqual(docs, [{'user_id': i, 'name': 'u%d' % i} for i in (6, 5, 4, 3)])
        doc = self.coll.find_one({'user_id': 2}, {'name': 1})
        self.assertEqual(set(doc), {'_id', 'name'})
        self.assertEqual(list(self.coll.find({}, {'user_id': 1, '_id': 0}).skip(8)),
                         [{'user_id': 8}, {'user_id': 9}])
        self.assertEqual(len(list(self.coll.find().limit(3))), 3)
        self.assertEqual(self.coll.count_documents({'user_id': {'$lt': 5}}), 5)
        self.assertEqual(sorted(self.coll.distinct('user_id', {'user_id': {'$gt': 7}})), [8, 9])

    def test_query_semantics(self):
        self.coll.insert_many([
            {'user_id': 5, 'timestamp': 100, 'passes': [{'pass_uuid': 'a', 'status': 'active'}]},
            {'user_id': Int64(6), 'timestamp': 200.0, 'passes': []},
            {'user_id': 7.0},
        ])
        for value in (5, Int64(5), 5.0):
            self.assertEqual(self.coll.find_one({'user_id': value})['timestamp'], 100)
        self.assertEqual(self.coll.find_one({'user_id': 6})['timestamp'], 200.0)
        self.assertIsNotNone(self.coll.find_one({'user_id': Int64(7)}))
        self.assertEqual(self.coll.count_documents({'timestamp': {'$lte': 200}}), 2)
        self.assertEqual(self.coll.count_documents({'$or': [{'timestamp': {'$lt': 150}},
                                                             {'timestamp': {'$exists': False}}]}), 2)
        self.assertEqual(self.coll.find_one({'passes.pass_uuid': 'a'})['user_id'], 5)
        self.assertEqual(self.coll.count_documents({'passes.status': 'active'}), 1)

    def test_getmore(self):
        self.coll.insert_many([{'i': i} for i in range(250)])
        cursor = self.coll.find({}, sort=[('i', 1)])
        self.assertEqual([d['i'] for d in cursor], list(range(250)))
        # The raw command shows the default first batch of 101 and a live cursor id.
        reply = self.db.command('find', self.coll.name, filter={})
        self.assertEqual(len(reply['cursor']['firstBatch']), 101)
        self.assertIsInstance(reply['cursor']['id'], Int64)
        self.assertNotEqual(reply['cursor']['id'], 0)
        more = self.db.command('getMore', reply['cursor']['id'], collection=self.coll.name, batchSize=100)
        self.assertEqual(len(more['cursor']['nextBatch']), 100)
        more = self.db.command('getMore', reply['cursor']['id'], collection=self.coll.name)
        self.assertEqual(len(more['cursor']['nextBatch']), 49)
        self.assertEqual(more['cursor']['id'], 0)
        with self.assertRaises(OperationFailure) as cm:
            self.db.command('getMore', reply['cursor']['id'], collection=self.coll.name)
        self.assertEqual(cm.exception.code, 43)
        self.assertEqual(len(list(self.coll.find().batch_size(7))), 250)
        self.assertEqual(len(list(self.coll.aggregate([{'$match': {'i': {'$gte': 10}}}], batchSize=5))), 240)

    def test_update_operators(self):
        self.coll.insert_one({'user_id': 1, 'timestamp': 100,
                              'passes': [{'pass_uuid': 'a', 'status': 'x'}, {'pass_uuid': 'b', 'status': 'y'}]})
        r = self.coll.update_one({'user_id': 1, 'passes.pass_uuid': 'b'},
                                 {'$set': {'passes.$.status': 'z'}, '$max': {'timestamp': 50},
                                  '$push': {'passesLog': {'op': 'upsert'}}})
        self.assertEqual((r.matched_count, r.modified_count), (1, 1))
        doc = self.coll.find_one({'user_id': 1})
        self.assertEqual([p['status'] for p in doc['passes']], ['x', 'z'])
        self.assertEqual(doc['timestamp'], 100)
        self.assertEqual(doc['passesLog'], [{'op': 'upsert'}])
        self.coll.update_one({'user_id': 1}, {'$max': {'timestamp': 150}, '$pull': {'passes': {'pass_uuid': 'a'}},
                                              '$unset': {'passesLog': ''}})
        doc = self.coll.find_one({'user_id': 1}, {'_id': 0})
        self.assertEqual(doc, {'user_id': 1, 'timestamp': 150, 'passes': [{'pass_uuid': 'b', 'status': 'z'}]})
        r = self.coll.update_one({'user_id': 1}, {'$set': {'timestamp': 150}})
        self.assertEqual((r.matched_count, r.modified_count), (1, 0))
        # Whole-element replacement through the positional operator.
        self.coll.update_one({'user_id': 1, 'passes.pass_uuid': 'b'},
                             {'$set': {'passes.$': {'pass_uuid': 'b', 'status': 'new'}}})
        self.assertEqual(self.coll.find_one({'user_id': 1})['passes'], [{'pass_uuid': 'b', 'status': 'new'}])
        # arrayFilters
        self.coll.update_one({'user_id': 1}, {'$set': {'passes.$[p].status': 'af'}},
                             array_filters=[{'p.pass_uuid': 'b'}])
        self.assertEqual(self.coll.find_one({'user_id': 1})['passes'][0]['status'], 'af')
        # Upsert: only the equality fields of the filter plus the update are inserted.
        r = self.coll.update_one({'user_id': 2, '$or': [{'timestamp': {'$lt': 10}}, {'timestamp': {'$exists': False}}]},
                                 {'$set': {'timestamp': 20}, '$push': {'passes': {'pass_uuid': 'c'}},
                                  '$setOnInsert': {'bytemark_incomplete': True}}, upsert=True)
        self.assertIsNotNone(r.upserted_id)
        doc = self.coll.find_one({'_id': r.upserted_id}, {'_id': 0})
        self.assertEqual(doc, {'user_id': 2, 'bytemark_incomplete': True, 'passes': [{'pass_uuid': 'c'}],
                               'timestamp': 20})
        # $setOnInsert does nothing on an update.
        self.coll.update_one({'user_id': 2}, {'$setOnInsert': {'x': 1}, '$set': {'y': 1}}, upsert=True)
        self.assertNotIn('x', self.coll.find_one({'user_id': 2}))
        # Replacement documents, with and without upsert.
        self.coll.replace_one({'user_id': 2}, {'user_id': 2, 'replaced': True})
        self.assertEqual(self.coll.find_one({'user_id': 2}, {'_id': 0}), {'user_id': 2, 'replaced': True})
        r = self.coll.replace_one({'user_id': 3}, {'user_id': 3, 'fresh': 1}, upsert=True)
        self.assertIsNotNone(r.upserted_id)
        # Pipeline-style update (MongoDB 4.2+).
        self.coll.update_one({'user_id': 3}, [{'$set': {'passes': {'$concatArrays': [
            {'$ifNull': ['$passes', []]}, [{'pass_uuid': 'd'}]]}}}, {'$unset': 'fresh'}])
        self.assertEqual(self.coll.find_one({'user_id': 3}, {'_id': 0}), {'user_id': 3, 'passes': [{'pass_uuid': 'd'}]})
        # The pipeline idiom for "mark only when inserting": $type of _id is 'missing' on insert.
        mark = [{'$set': {'bytemark_incomplete': {'$cond': [{'$eq': [{'$type': '$_id'}, 'missing']}, True,
                                                            '$bytemark_incomplete']},
                          'log': {'$concatArrays': [{'$ifNull': ['$log', []]}, [{'op': 'upsert'}]]}}}]
        self.coll.update_one({'user_id': 3}, mark, upsert=True)
        self.coll.update_one({'user_id': 4}, mark, upsert=True)
        self.assertNotIn('bytemark_incomplete', self.coll.find_one({'user_id': 3}))
        self.assertEqual(self.coll.find_one({'user_id': 4}, {'_id': 0}),
                         {'user_id': 4, 'bytemark_incomplete': True, 'log': [{'op': 'upsert'}]})
        self.coll.delete_one({'user_id': 4})
        # update_many
        r = self.coll.update_many({}, {'$inc': {'n': 1}})
        self.assertEqual((r.matched_count, r.modified_count), (3, 3))

    def test_update_errors(self):
        self.coll.insert_one({'user_id': 1, 'passes': [], 's': 'str'})
        cases = [({'$pull': {'passes': {'x': 1}}, '$push': {'passes': 1}}, 40),
                 ({'$set': {'a': 1, 'a.b': 2}}, 40),
                 ({'$foo': {'a': 1}}, 9),
                 ({'$inc': {'s': 1}}, 14),
                 ({'$push': {'s': 1}}, 2),
                 ({'$set': {'_id': 5}}, 66)]
        for update, code in cases:
            with self.assertRaises(WriteError, msg=update) as cm:
                self.coll.update_one({'user_id': 1}, update)
            self.assertEqual(cm.exception.code, code, update)
        with self.assertRaises(OperationFailure) as cm:
            self.coll.find_one({'$bogus': 1})
        self.assertEqual(cm.exception.code, 2)

    def test_find_and_modify(self):
        doc = self.coll.find_one_and_update({'user_id': 9}, {'$push': {'passes': {'pass_uuid': 'a'}}, '$set': {'timestamp': 1}},
                                            upsert=True, return_document=ReturnDocument.AFTER,
                                            projection={'_id': 0})
        self.assertEqual(doc, {'user_id': 9, 'passes': [{'pass_uuid': 'a'}], 'timestamp': 1})
        before = self.coll.find_one_and_update({'user_id': 9}, {'$set': {'timestamp': 2}})
        self.assertEqual(before['timestamp'], 1)
        self.assertIsNone(self.coll.find_one_and_update({'user_id': 10}, {'$set': {'timestamp': 2}}))
        # Raw reply shape.
        reply = self.db.command('findAndModify', self.coll.name, query={'user_id': 11},
                                update={'$set': {'t': 1}}, upsert=True, new=True)
        self.assertEqual(reply['lastErrorObject']['n'], 1)
        self.assertFalse(reply['lastErrorObject']['updatedExisting'])
        self.assertEqual(reply['lastErrorObject']['upserted'], reply['value']['_id'])
        reply = self.db.command('findAndModify', self.coll.name, query={'user_id': 11}, update={'$set': {'t': 2}})
        self.assertEqual(reply['lastErrorObject'], {'n': 1, 'updatedExisting': True})
        self.assertEqual(reply['value']['t'], 1)
        gone = self.coll.find_one_and_delete({'user_id': 11})
        self.assertEqual(gone['t'], 2)
        self.assertIsNone(self.coll.find_one({'user_id': 11}))
        # sort picks the document to modify
        self.coll.insert_many([{'k': 1, 'v': 1}, {'k': 1, 'v': 3}, {'k': 1, 'v': 2}])
        top = self.coll.find_one_and_update({'k': 1}, {'$set': {'top': True}}, sort=[('v', -1)])
        self.assertEqual(top['v'], 3)

    def test_unique_index_duplicate_key(self):
        self.coll.create_index('user_id', unique=True)
        self.assertIn('user_id_1', self.coll.index_information())
        self.coll.insert_one({'user_id': 1, 'timestamp': 100})
        with self.assertRaises(DuplicateKeyError) as cm:
            self.coll.insert_one({'user_id': 1})
        self.assertEqual(cm.exception.code, 11000)
        self.assertIn('E11000 duplicate key error', str(cm.exception))
        with self.assertRaises(DuplicateKeyError):       # numerically equal across BSON types
            self.coll.insert_one({'user_id': Int64(1)})
        # A conditional upsert whose filter misses an existing user must fail, like MongoDB.
        with self.assertRaises(DuplicateKeyError) as cm:
            self.coll.update_one({'user_id': 1, 'timestamp': {'$lt': 50}}, {'$set': {'timestamp': 50}}, upsert=True)
        self.assertEqual(cm.exception.code, 11000)
        with self.assertRaises(DuplicateKeyError) as cm:
            self.coll.find_one_and_update({'user_id': 1, 'timestamp': {'$lt': 50}}, {'$set': {'timestamp': 50}},
                                          upsert=True)
        self.assertEqual(cm.exception.code, 11000)
        self.assertEqual(cm.exception.details['codeName'], 'DuplicateKey')
        # ... while a matching one updates in place.
        r = self.coll.update_one({'user_id': 1, 'timestamp': {'$lt': 500}}, {'$set': {'timestamp': 500}}, upsert=True)
        self.assertEqual((r.matched_count, r.upserted_id), (1, None))
        # An update that would create a duplicate is rejected and leaves the document alone.
        self.coll.insert_one({'user_id': 2})
        with self.assertRaises(DuplicateKeyError):
            self.coll.update_one({'user_id': 2}, {'$set': {'user_id': 1}})
        self.assertIsNotNone(self.coll.find_one({'user_id': 2}))
        # Unordered bulk: the good document still goes in.
        with self.assertRaises(pymongo.errors.BulkWriteError) as cm:
            self.coll.insert_many([{'user_id': 1}, {'user_id': 3}], ordered=False)
        self.assertEqual(cm.exception.details['nInserted'], 1)
        self.assertEqual(cm.exception.details['writeErrors'][0]['code'], 11000)
        # Building a unique index over duplicates fails; dropping indexes works.
        self.coll.insert_one({'dup': 1})
        self.coll.insert_one({'dup': 1, 'user_id': 4})
        with self.assertRaises(OperationFailure) as cm:
            self.coll.create_index('dup', unique=True)
        self.assertEqual(cm.exception.code, 11000)
        self.coll.drop_index('user_id_1')
        self.coll.insert_one({'user_id': 1})

    def test_index_lookups_stay_consistent(self):
        # Equality lookups on indexed fields use a hash index; it must follow every write.
        self.coll.create_index('user_id', unique=True)
        self.coll.create_index('tags')
        self.coll.insert_many([{'user_id': 1, 'tags': ['a', 'b']}, {'user_id': 2, 'tags': 'a'},
                               {'user_id': 3, 'tags': [{'x': 1}]}])
        self.assertEqual([d['user_id'] for d in self.coll.find({'tags': 'a'})], [1, 2])
        self.coll.update_one({'user_id': 1}, {'$set': {'user_id': 10, 'tags': 'c'}})
        self.assertIsNone(self.coll.find_one({'user_id': 1}))
        self.assertEqual(self.coll.find_one({'user_id': 10.0})['tags'], 'c')
        self.assertEqual([d['user_id'] for d in self.coll.find({'tags': 'a'})], [2])
        self.coll.replace_one({'user_id': 2}, {'user_id': 20})
        self.assertIsNotNone(self.coll.find_one({'user_id': Int64(20)}))
        self.coll.delete_one({'user_id': 20})
        self.assertIsNone(self.coll.find_one({'user_id': 20}))
        self.coll.insert_one({'user_id': 20})
        self.assertEqual(self.coll.count_documents({'user_id': 20}), 1)
        self.coll.drop()
        self.coll.insert_one({'user_id': 10})
        self.coll.create_index('user_id', unique=True)
        self.assertEqual(self.coll.find_one({'user_id': 10})['user_id'], 10)
        with self.assertRaises(DuplicateKeyError):
            self.coll.insert_one({'user_id': 10.0})

    def test_in_lookups_use_the_index(self):
        # {user_id: {$in: [...]}} (the module's batched lookups) reads one index bucket
        # per value; the answer must be what a scan gives: insertion order, mixed
        # numeric types equal, other conditions still applied.
        self.coll.create_index('user_id')
        self.coll.insert_many([{'user_id': i % 7, 'n': i} for i in range(30)] + [{'user_id': 'x', 'n': 99}])
        got = [d['n'] for d in self.coll.find({'user_id': {'$in': [3, Int64(5), 6.0, 42]}})]
        self.assertEqual(got, [i for i in range(30) if i % 7 in (3, 5, 6)])
        self.assertEqual([d['n'] for d in self.coll.find({'user_id': {'$in': ['x']}, 'n': {'$gt': 50}})], [99])
        self.assertEqual(list(self.coll.find({'user_id': {'$in': [1000]}})), [])
        self.coll.update_one({'n': 3}, {'$set': {'user_id': 1000}})
        self.assertEqual([d['n'] for d in self.coll.find({'user_id': {'$in': [1000]}})], [3])
        with self.assertRaises(OperationFailure):
            list(self.coll.find({'user_id': {'$in': [1000]}, 'n': {'$bogus': 1}}))

    def test_delete(self):
        self.coll.insert_many([{'user_id': i, 'timestamp': i * 10} for i in range(10)])
        self.assertEqual(self.coll.delete_many({'timestamp': {'$lt': 45}}).deleted_count, 5)
        self.assertEqual(self.coll.delete_one({'user_id': {'$gte': 0}}).deleted_count, 1)
        self.assertEqual(self.coll.count_documents({}), 4)
        self.assertEqual(self.coll.delete_many({}).deleted_count, 4)
        self.assertIn(self.coll.name, self.db.list_collection_names())   # collection survives

    def test_type_round_trip(self):
        doc = {'i32': 5, 'i64': Int64(5), 'big': Int64(2 ** 40), 'dbl': 5.0, 'neg': -1.5, 's': 'x',
               'b': True, 'n': None, 'arr': [1, Int64(2), 3.0], 'sub': {'i64': Int64(9)},
               'oid': bson.ObjectId(), 'date': __import__('datetime').datetime(2024, 1, 2, 3, 4, 5, 678000)}
        self.coll.insert_one(dict(doc, user_id=1))
        self.coll.update_one({'user_id': 1}, {'$inc': {'i64': 1, 'i32': 1, 'dbl': 1},
                                              '$push': {'arr': Int64(4)}, '$max': {'big': Int64(2 ** 41)}})
        got = self.coll.find_one({'user_id': 1}, {'_id': 0})
        self.assertIs(type(got['i32']), int)
        self.assertIs(type(got['i64']), Int64)
        self.assertIs(type(got['big']), Int64)
        self.assertIs(type(got['dbl']), float)
        self.assertEqual((got['i32'], got['i64'], got['dbl'], got['big']), (6, 6, 6.0, 2 ** 41))
        self.assertEqual([type(x) for x in got['arr']], [int, Int64, float, Int64])
        self.assertIs(type(got['sub']['i64']), Int64)
        for k in ('s', 'b', 'n', 'oid', 'date', 'neg'):
            self.assertEqual(got[k], doc[k])
            self.assertIs(type(got[k]), type(doc[k]))
        # Byte-exact check: read the raw BSON back and compare with what was written.
        self.coll.insert_one(dict(doc, user_id=2, _id=1))
        raw = self.coll.with_options(codec_options=CodecOptions(
            document_class=bson.raw_bson.RawBSONDocument)).find_one({'_id': 1})
        self.assertEqual(raw.raw, bson.encode(dict([('_id', 1)] + list(doc.items()) + [('user_id', 2)])))

    def test_server_status_connections(self):
        before = server_connections(self.client)
        socks = [socket.create_connection(('127.0.0.1', PORT)) for _ in range(5)]
        deadline = time.time() + 3
        while server_connections(self.client) != before + 5 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(server_connections(self.client), before + 5)
        status = self.client.admin.command('serverStatus')
        self.assertGreaterEqual(status['connections']['totalCreated'], before + 5)
        self.assertIn('uptime', status)
        for s in socks:
            s.close()
        deadline = time.time() + 3
        while server_connections(self.client) != before and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(server_connections(self.client), before)

    def test_wire_details(self):
        # kind-1 document sequence + checksum flag
        s = socket.create_connection(('127.0.0.1', PORT))
        s.sendall(op_msg({'insert': 'wire', '$db': 'cache'}, 7, sequences={'documents': [{'w': 1}, {'w': 2}]},
                         checksum=True))
        rid, reply = read_reply(s)
        self.assertEqual((rid, reply['n'], reply['ok']), (7, 2, 1.0))
        # legacy OP_QUERY handshake, answered with OP_REPLY (also with the $query wrapping)
        s.sendall(op_query_cmd('admin.$cmd', {'isMaster': 1, 'helloOk': True, 'client': {}}, 5))
        rid, reply = read_reply(s)
        self.assertEqual((rid, reply['ismaster'], reply['maxWireVersion']), (5, True, 13))
        s.sendall(op_query_cmd('cache.$cmd', {'$query': {'count': 'wire'}, '$readPreference': {'mode': 'primary'}}, 6))
        self.assertEqual(read_reply(s)[1]['n'], 2)
        # moreToCome: no reply; the next request is answered normally
        s.sendall(op_msg({'insert': 'wire', '$db': 'cache', 'documents': [{'w': 3}]}, 8, flags=2))
        s.sendall(op_msg({'count': 'wire', '$db': 'cache'}, 9))
        rid, reply = read_reply(s)
        self.assertEqual((rid, reply['n']), (9, 3))
        # pipelining: many requests in one write, answered in order
        s.sendall(b''.join(op_msg({'ping': 1, '$db': 'admin'}, 100 + i) for i in range(50)))
        self.assertEqual([read_reply(s)[0] for _ in range(50)], list(range(100, 150)))
        s.close()
        # a client that disappears mid-message must not hurt the server
        for cut in (3, 20, 40):
            s = socket.create_connection(('127.0.0.1', PORT))
            s.sendall(op_msg({'ping': 1, '$db': 'admin'})[:cut])
            s.close()
        s = socket.create_connection(('127.0.0.1', PORT))
        s.sendall(struct.pack('<iiii', 1 << 30, 1, 0, 2013))    # absurd length: dropped
        s.settimeout(2)
        self.assertEqual(s.recv(10), b'')
        s.close()
        self.assertEqual(self.client.admin.command('ping')['ok'], 1.0)
        self.db.wire.drop()

    def test_many_concurrent_connections(self):
        errors = []

        def worker(i):
            try:
                s = socket.create_connection(('127.0.0.1', PORT))
                for j in range(5):
                    s.sendall(op_msg({'update': 'conc', '$db': 'cache',
                                      'updates': [{'q': {'user_id': i}, 'u': {'$inc': {'n': 1}}, 'upsert': True}]}, j))
                    self.assertEqual(read_reply(s)[1]['ok'], 1.0)
                s.close()
            except Exception as e:      # collected and reported by the main thread
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.db.conc.count_documents({'n': 5}), 300)
        self.db.conc.drop()

    def test_admin_commands(self):
        self.coll.insert_one({'a': 1})
        names = self.db.list_collection_names()
        self.assertIn(self.coll.name, names)
        self.assertIn('cache', self.client.list_database_names())
        with self.assertRaises(OperationFailure) as cm:
            self.db.command('create', self.coll.name)
        self.assertEqual(cm.exception.code, 48)
        self.db.create_collection('fresh_one')
        self.assertIn('fresh_one', self.db.list_collection_names())
        self.db.drop_collection('fresh_one')
        self.assertNotIn('fresh_one', self.db.list_collection_names())
        self.client.drop_database('scratch_db')
        self.client.scratch_db.x.insert_one({})
        self.client.drop_database('scratch_db')
        self.assertNotIn('scratch_db', self.client.list_database_names())
        self.assertEqual(self.client.admin.command('getParameter', 1, featureCompatibilityVersion=1)
                         ['featureCompatibilityVersion']['version'], '5.0')


if __name__ == '__main__':
    unittest.main()
