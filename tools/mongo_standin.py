#!/usr/bin/python3
"""MongoDB wire-protocol stand-in for tests (no real mongod can be installed here).

Usage:
    /usr/bin/python3 tools/mongo_standin.py --host 127.0.0.1 --port PORT [--pidfile FILE] [--verbose]

Prints "mongo-standin listening on HOST:PORT" once it accepts connections (--port 0
picks a free port and prints it). SIGTERM/SIGINT stop it. Data lives in memory only.

Needs Debian's interpreter and packages only: python3-mongomock (engine), python3-pymongo /
python3-bson (BSON codec; pymongo 3.11), python3-sentinels and python3-packaging (pulled in
by mongomock). Run it with /usr/bin/python3, not a pyenv python.

What it speaks: OP_MSG (kind-0 body + kind-1 document sequences, checksumPresent and
moreToCome honoured), OP_QUERY commands (legacy handshake) answered with OP_REPLY. It
presents itself as a standalone MongoDB 5.0 (maxWireVersion 13), which both
mongo-c-driver 1.23 (wire 6..17) and the Node driver 7.x (wire >= 8) accept. No
OP_COMPRESSED, no auth, no TLS, no transactions, no topologyVersion (so drivers poll the
server instead of using streaming/awaitable hello).

Division of labour: mongomock provides the query matcher (filter_applies), projection,
sort keys, aggregation pipeline, `distinct` and the in-memory store/index metadata.
Update operators, upserts, unique-index checks, cursors and write results are implemented
here, because mongomock 4.1.2 gets several of those wrong in ways that would hide bugs in
a client: no path-conflict detection (MongoDB rejects {$pull: {a}, $push: {a}} with code
40), positional `$` only works for $push/$pull with an $elemMatch query, $pull on numeric
paths hits the wrong array, $inc turns int64 into int32, arrayFilters and pipeline updates
are missing, upserts ignore equality fields under $and, and insert rejects field names
with dots that MongoDB 5.0 accepts.

KNOWN SEMANTIC GAPS (documented, not closed):
  * Indexes: equality on a top-level field that has an index ({user_id: 5}) is a hash
    lookup; everything else is a full scan (fine for tests, slow past ~10k documents).
    Unique indexes are enforced (sparse, partialFilterExpression and array elements
    honoured); an index with the same key but another name is not refused.
  * Query language = mongomock's: no $text, $near/$geoWithin, $where, collation; positional
    projection ("a.$") is not supported; $expr only with mongomock's expression operators.
    Query equality treats true == 1 and false == 0 (Python semantics; MongoDB keeps bool
    and numbers apart) and embedded documents compare ignoring key order (unique indexes
    and $addToSet/$pullAll do it the MongoDB way).
  * Pipeline-style updates support $set/$addFields/$project/$unset/$replaceRoot/$replaceWith
    with mongomock's expression operators, plus $type, $$NOW and a field set to exactly
    "$$REMOVE" (added here); $$REMOVE inside other expressions, $switch on some types,
    $setField/$getField and other newer operators are missing.
  * Positional `$` is resolved from predicates on that array path at the top level or under
    $and (not from $or); at most one `$` per path, as in MongoDB.
  * Upsert seeds come from top-level / $and equality predicates (incl. {$eq}); a
    single-clause $or is not treated as equality.
  * Updates apply fields in lexicographic path order (MongoDB 5.0 behaviour); $bit is not
    supported; the "array filter was not used" error is not raised.
  * Unacknowledged writes (w:0 / moreToCome) are executed but errors are dropped (as MongoDB).
  * Sessions/transactions, readConcern/writeConcern, maxTimeMS, hint, let, collation and
    unknown command fields: accepted and ignored. No authentication.
  * Field names are not validated for storage: "$"-prefixed or dotted names inside stored
    documents are kept (MongoDB < 5.0 rejected them with code 52; 5.0+ accepts most).
  * drop of a missing collection answers NamespaceNotFound (26) like MongoDB 5.0.
"""

import argparse
import copy
import datetime
import gc
import itertools
import operator
import os
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp
import mongomock
from mongomock import aggregate, filtering, helpers
from pymongo.errors import OperationFailure, DuplicateKeyError
from sentinels import NOTHING

# --------------------------------------------------------------------------- BSON / types

# Keep every BSON type distinct: int64 decodes to Int64 (pymongo always does), binary
# subtypes 3/4 stay Binary instead of becoming uuid.UUID (which would be re-encoded as a
# different subtype), datetimes stay naive UTC with ms precision.
CODEC = CodecOptions(document_class=dict, tz_aware=False,
                     uuid_representation=UuidRepresentation.UNSPECIFIED)


def _int64_preserving(name):
    """MongoDB: long op int -> long. Python's int ops on an Int64 return a plain int,
    which bson would write back as int32; keep the Int64 type instead."""
    base = getattr(int, name)

    def op(self, other):
        result = base(self, other)
        return Int64(result) if type(result) is int else result
    return op


for _name in ('__add__', '__radd__', '__sub__', '__rsub__', '__mul__', '__rmul__'):
    setattr(Int64, _name, _int64_preserving(_name))

NUMBER_TYPES = (int, float, bson.decimal128.Decimal128)


def _expr_type(self, op, values, _orig=aggregate._Parser._handle_type_convertion_operator):
    """Adds the $type aggregation expression, which mongomock lacks (it is the usual way to
    tell an upsert's insert from an update inside a pipeline update)."""
    if op != '$type':
        return _orig(self, op, values)
    if isinstance(values, list) and len(values) == 1:
        values = values[0]
    try:
        value = self.parse(values)
    except KeyError:
        return 'missing'
    return 'missing' if value is NOTHING else _type_name(value)


def _expr_basic(self, expression, _orig=aggregate._Parser._parse_basic_expression):
    """MongoDB evaluates every element of an array literal ([ "$a", {...} ]); mongomock
    returns the list untouched, which would hide e.g. an unescaped "$..." string inside a
    pushed document. Missing values become null, as on the server."""
    if not isinstance(expression, list):
        return _orig(self, expression)
    out = []
    for element in expression:
        try:
            out.append(self.parse(element))
        except KeyError:
            out.append(None)
    return out


aggregate.type_convertion_operators.append('$type')
aggregate._Parser._handle_type_convertion_operator = _expr_type
aggregate._Parser._parse_basic_expression = _expr_basic

MAX_BSON = 16 * 1024 * 1024
MAX_MESSAGE = 48000000
OP_REPLY, OP_QUERY, OP_MSG, OP_COMPRESSED = 1, 2004, 2013, 2012
HDR = struct.Struct('<iiii')
MISSING = object()

CODE_NAMES = {
    1: 'InternalError', 2: 'BadValue', 9: 'FailedToParse', 14: 'TypeMismatch',
    20: 'IllegalOperation', 26: 'NamespaceNotFound', 27: 'IndexNotFound',
    28: 'PathNotViable', 40: 'ConflictingUpdateOperators', 43: 'CursorNotFound',
    48: 'NamespaceExists', 52: 'DollarPrefixedFieldName', 54: 'NotSingleValueField',
    56: 'EmptyFieldName', 59: 'CommandNotFound', 66: 'ImmutableField',
    72: 'InvalidOptions', 73: 'InvalidNamespace', 85: 'IndexOptionsConflict',
    238: 'NotImplemented', 11000: 'DuplicateKey',
}


class CmdError(Exception):
    """A MongoDB error reply: ok:0 for commands, a writeErrors entry for write statements."""

    def __init__(self, code, msg, **extra):
        super().__init__(msg)
        self.code, self.msg, self.extra = code, msg, extra

    def doc(self):
        d = {'ok': 0.0, 'errmsg': self.msg, 'code': self.code,
             'codeName': CODE_NAMES.get(self.code, 'UnknownError')}
        d.update(self.extra)
        return d


def _fmt(v):
    """Render a value roughly like the server's error messages do."""
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, ObjectId):
        return "ObjectId('%s')" % v
    if isinstance(v, dict):
        return '{ ' + ', '.join('%s: %s' % (k, _fmt(x)) for k, x in v.items()) + ' }'
    if isinstance(v, list):
        return '[ ' + ', '.join(_fmt(x) for x in v) + ' ]'
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    return str(v)


def _type_name(v):
    for t, n in ((bool, 'bool'), (Int64, 'long'), (int, 'int'), (float, 'double'),
                 (str, 'string'), (dict, 'object'), (list, 'array'), (ObjectId, 'objectId'),
                 (datetime.datetime, 'date'), (type(None), 'null'), (bytes, 'binData'),
                 (bson.binary.Binary, 'binData'), (Regex, 'regex'), (re.Pattern, 'regex'),
                 (bson.decimal128.Decimal128, 'decimal'), (Timestamp, 'timestamp')):
        if isinstance(v, t):
            return n
    return type(v).__name__


def _is_number(v):
    return isinstance(v, NUMBER_TYPES) and not isinstance(v, bool)


def _same(a, b):
    """Exact BSON identity (type and bytes), used for nModified and _id checks."""
    return bson.encode({'v': a}, codec_options=CODEC) == bson.encode({'v': b}, codec_options=CODEC)


def _plain_scalar(v):
    return isinstance(v, (str, int, float, ObjectId)) and not isinstance(v, bool) and v == v


def _may_equal(doc_value, v):
    """False only when doc_value can certainly not equal v under MongoDB rules."""
    if doc_value is MISSING:
        return False
    if isinstance(doc_value, (list, bson.decimal128.Decimal128)):
        return True
    return doc_value == v


def _strict_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b)
                and all(_strict_equal(a[k], b[k]) for k in a))
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_strict_equal(x, y) for x, y in zip(a, b)))
    return a == b


def _index_values(doc, path):
    """The keys a document contributes to an index on path: arrays contribute each
    element (multikey), a missing field counts as null."""
    out = []
    for v in filtering.iter_key_candidates(path, doc):
        if v is not NOTHING:
            out.extend(v if isinstance(v, list) and v else [v])
    return out or [None]


def _bson_eq(a, b):
    return filtering.bson_compare(operator.eq, a, b)


# --------------------------------------------------------------------------- paths

def _child(node, part):
    if isinstance(node, dict):
        return node.get(part, MISSING)
    if isinstance(node, list) and part.isdigit():
        i = int(part)
        return node[i] if i < len(node) else MISSING
    return MISSING


def _put(node, part, value):
    if isinstance(node, dict):
        node[part] = value
    else:
        i = int(part)
        if i >= len(node):
            node.extend([None] * (i + 1 - len(node)))
        node[i] = value


def _parent(doc, parts, create):
    """Walk to the container of the last path part. With create, build missing
    intermediate documents (MongoDB semantics); otherwise return (None, None)."""
    node = doc
    for i, part in enumerate(parts[:-1]):
        nxt = _child(node, part)
        if nxt is MISSING:
            if not create:
                return None, None
            if isinstance(node, list) and not part.isdigit():
                raise CmdError(28, "Cannot create field '%s' in element {%s: %s}"
                               % (part, parts[i - 1] if i else '', _fmt(node)))
            nxt = {}
            _put(node, part, nxt)
        elif not isinstance(nxt, (dict, list)):
            if not create:
                return None, None
            raise CmdError(28, "Cannot create field '%s' in element {%s: %s}"
                           % (parts[i + 1], part, _fmt(nxt)))
        node = nxt
    last = parts[-1]
    if isinstance(node, list) and not last.isdigit():
        if not create:
            return None, None
        raise CmdError(28, "Cannot create field '%s' in element {%s: %s}"
                       % (last, parts[-2] if len(parts) > 1 else '', _fmt(node)))
    return node, last


def _set_path(doc, path, value):
    node, last = _parent(doc, path.split('.'), True)
    _put(node, last, value)


def _get_path(doc, path):
    node = doc
    for part in path.split('.'):
        node = _child(node, part)
        if node is MISSING:
            break
    return node


def _predicates(q):
    """(path, condition) pairs that must all hold: top level and nested $and."""
    out = []
    for k, v in q.items():
        if k == '$and':
            for sub in v:
                out.extend(_predicates(sub))
        elif not k.startswith('$'):
            out.append((k, v))
    return out


def _wrap(path, value):
    d = value
    for part in reversed(path.split('.')):
        d = {part: d}
    return d


class PathExpander:
    """Turns update paths with `$`, `$[]` and `$[id]` into concrete index paths for one
    document, the way the server resolves them."""

    def __init__(self, query, array_filters, is_insert):
        self.query = query or {}
        self.is_insert = is_insert
        self.filters = {}
        for f in array_filters or []:
            if not isinstance(f, dict) or not f:
                raise CmdError(9, 'Cannot use an expression without a top-level field name in arrayFilters')
            ident = next(iter(f)).split('.')[0]
            self.filters.setdefault(ident, []).append(f)

    def positional(self, array_path, array):
        preds = [{k: c} for k, c in _predicates(self.query)
                 if k == array_path or k.startswith(array_path + '.')]
        if preds and not self.is_insert:
            # Match one element at a time, wrapped back into its path, so that dotted
            # predicates, $elemMatch and scalar-array equality all behave like the server.
            spec = {'$and': preds}
            for i, el in enumerate(array):
                if filtering.filter_applies(spec, _wrap(array_path, [el])):
                    return i
        raise CmdError(2, 'The positional operator did not find the match needed from the query.')

    def element_ok(self, ident, el, path):
        if ident not in self.filters:
            raise CmdError(2, "No array filter found for identifier '%s' in path '%s'" % (ident, path))
        return all(filtering.filter_applies(f, {ident: el}) for f in self.filters[ident])

    def expand(self, doc, path):
        parts = path.split('.')
        if '$' not in path:
            return [parts]
        out = []
        self._walk(doc, parts, 0, [], path, out)
        return out

    def _walk(self, node, parts, i, prefix, path, out):
        if i == len(parts):
            out.append(prefix)
            return
        part = parts[i]
        if part == '$' or (part.startswith('$[') and part.endswith(']')):
            if not isinstance(node, list):
                if part == '$':
                    raise CmdError(2, 'The positional operator did not find the match needed from the query.')
                raise CmdError(2, "The path '%s' must exist in the document in order to apply array updates."
                               % '.'.join(prefix))
            if part == '$':
                idx = self.positional('.'.join(prefix), node)
                self._walk(node[idx], parts, i + 1, prefix + [str(idx)], path, out)
                return
            ident = part[2:-1]
            for j, el in enumerate(node):
                if not ident or self.element_ok(ident, el, path):
                    self._walk(el, parts, i + 1, prefix + [str(j)], path, out)
            return
        self._walk(_child(node, part), parts, i + 1, prefix + [part], path, out)


# --------------------------------------------------------------------------- update operators

UPDATE_OPERATORS = ('$set', '$unset', '$inc', '$mul', '$min', '$max', '$push', '$pull',
                    '$pullAll', '$addToSet', '$pop', '$rename', '$setOnInsert', '$currentDate')


def classify_update(u):
    if isinstance(u, list):
        return 'pipeline'
    if not isinstance(u, dict):
        raise CmdError(14, 'Update argument must be either an object or an array')
    keys = list(u)
    if not keys or not keys[0].startswith('$'):
        for k in keys:
            if k.startswith('$'):
                raise CmdError(52, "The dollar ($) prefixed field '%s' in '%s' is not valid for storage." % (k, k))
        return 'replacement'
    seen = []
    for op in keys:
        if op not in UPDATE_OPERATORS:
            raise CmdError(9, 'Unknown modifier: %s. Expected a valid update modifier or '
                              'pipeline-style update specified as an array' % op)
        if not isinstance(u[op], dict):
            raise CmdError(9, 'Modifiers operate on fields but we found type %s instead. For example: '
                              '{$mod: {<field>: ...}} not {%s: %s}' % (_type_name(u[op]), op, _fmt(u[op])))
        paths = list(u[op])
        if op == '$rename':
            paths += [v for v in u[op].values() if isinstance(v, str)]
        for path in paths:
            parts = path.split('.')
            if '' in parts:
                raise CmdError(56, "The update path '%s' contains an empty field name, which is not allowed." % path)
            # MongoDB refuses two operations on the same path or on a path and its prefix.
            for other in seen:
                n = min(len(parts), len(other))
                if parts[:n] == other[:n]:
                    raise CmdError(40, "Updating the path '%s' would create a conflict at '%s'"
                                   % (path, '.'.join(parts[:n])))
            seen.append(parts)
    return 'modifier'


def _pull_matches(cond, el):
    if isinstance(cond, dict) and cond and all(k.startswith('$') for k in cond):
        return filtering.filter_applies({'v': cond}, {'v': el})
    if isinstance(cond, dict):
        return isinstance(el, dict) and filtering.filter_applies(cond, el)
    return _bson_eq(cond, el)


def _apply_one(doc, op, parts, value, now):
    path = '.'.join(parts)
    if op in ('$set', '$setOnInsert'):
        node, last = _parent(doc, parts, True)
        _put(node, last, copy.deepcopy(value))
    elif op == '$unset':
        node, last = _parent(doc, parts, False)
        if isinstance(node, dict):
            node.pop(last, None)
        elif isinstance(node, list) and int(last) < len(node):
            node[int(last)] = None
    elif op in ('$inc', '$mul'):
        if not _is_number(value):
            raise CmdError(14, 'Cannot %s with non-numeric argument: {%s: %s}'
                           % ('increment' if op == '$inc' else 'multiply', path, _fmt(value)))
        node, last = _parent(doc, parts, True)
        cur = _child(node, last)
        if cur is MISSING:
            _put(node, last, value if op == '$inc' else value * 0)
        elif not _is_number(cur):
            raise CmdError(14, "Cannot apply %s to a value of non-numeric type. {_id: %s} has the field '%s' "
                               "of non-numeric type %s" % (op, _fmt(doc.get('_id')), last, _type_name(cur)))
        else:
            _put(node, last, cur + value if op == '$inc' else cur * value)
    elif op in ('$min', '$max'):
        node, last = _parent(doc, parts, True)
        cur = _child(node, last)
        cmp = operator.lt if op == '$min' else operator.gt
        if cur is MISSING or filtering.bson_compare(cmp, value, cur):
            _put(node, last, copy.deepcopy(value))
    elif op in ('$push', '$addToSet'):
        node, last = _parent(doc, parts, True)
        cur = _child(node, last)
        if cur is not MISSING and not isinstance(cur, list):
            raise CmdError(2, "The field '%s' must be an array but is of type %s in document {_id: %s}"
                           % (path, _type_name(cur), _fmt(doc.get('_id'))))
        arr = [] if cur is MISSING else cur
        mods = value if isinstance(value, dict) and '$each' in value else None
        items = [value] if mods is None else mods['$each']
        if not isinstance(items, list):
            raise CmdError(2, 'The argument to $each in %s must be an array but it was of type: %s'
                           % (op, _type_name(items)))
        items = copy.deepcopy(items)
        if op == '$addToSet':
            if mods is not None and set(mods) - {'$each'}:
                raise CmdError(2, 'Found unexpected fields after $each in $addToSet')
            for item in items:
                if not any(_bson_eq(item, x) for x in arr):
                    arr.append(item)
        else:
            extra = set(mods or {}) - {'$each', '$slice', '$sort', '$position'}
            if extra:
                raise CmdError(2, 'Unrecognized clause in $push: %s' % extra.pop())
            pos = (mods or {}).get('$position')
            if pos is None:
                arr.extend(items)
            else:
                pos = int(pos)
                pos = max(len(arr) + pos, 0) if pos < 0 else pos
                arr[pos:pos] = items
            if mods and '$sort' in mods:
                spec = mods['$sort']
                if isinstance(spec, dict):
                    for key, direction in reversed(list(spec.items())):
                        arr.sort(key=lambda d, k=key: filtering.resolve_sort_key(k, d), reverse=direction < 0)
                else:
                    arr.sort(key=filtering.BsonComparable, reverse=spec < 0)
            if mods and '$slice' in mods:
                n = int(mods['$slice'])
                arr[:] = arr[n:] if n < 0 else arr[:n]
        if cur is MISSING:
            _put(node, last, arr)
    elif op in ('$pull', '$pullAll', '$pop'):
        node, last = _parent(doc, parts, False)
        cur = _child(node, last) if node is not None else MISSING
        if op == '$pop' and value not in (1, -1):
            raise CmdError(9, '$pop expects 1 or -1, found: %s' % _fmt(value))
        if op == '$pullAll' and not isinstance(value, list):
            raise CmdError(2, '$pullAll requires an array argument but was given a %s' % _type_name(value))
        if cur is MISSING:
            return
        if not isinstance(cur, list):
            raise CmdError(2 if op != '$pop' else 14,
                           "Cannot apply %s to a non-array value" % op)
        if op == '$pull':
            cur[:] = [x for x in cur if not _pull_matches(value, x)]
        elif op == '$pullAll':
            cur[:] = [x for x in cur if not any(_bson_eq(x, v) for v in value)]
        elif cur:
            cur.pop(-1 if value == 1 else 0)
    elif op == '$rename':
        if not isinstance(value, str) or not value:
            raise CmdError(2, 'The \'to\' field for $rename must be a string: %s: %s' % (path, _fmt(value)))
        node, last = _parent(doc, parts, False)
        if not isinstance(node, dict) or last not in node:
            return
        moved = node.pop(last)
        _set_path(doc, value, moved)
    elif op == '$currentDate':
        if value is True or value == {'$type': 'date'}:
            stamp = now
        elif value == {'$type': 'timestamp'}:
            stamp = Timestamp(int(time.time()), 1)
        else:
            raise CmdError(2, "%s is not valid type for $currentDate. Please use a boolean ('true') or "
                              "a $type expression ({$type: 'timestamp/date'})." % _fmt(value))
        node, last = _parent(doc, parts, True)
        _put(node, last, stamp)


def apply_modifiers(doc, u, query, array_filters, is_insert):
    """Apply an operator update in place. Paths are applied in lexicographic order of their
    components, like MongoDB 5.0, so new fields land in the same order as on a real server."""
    now = datetime.datetime.utcnow()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)   # BSON dates are ms
    expander = PathExpander(query, array_filters, is_insert)
    ops = []
    for op, fields in u.items():
        if op == '$setOnInsert' and not is_insert:
            continue
        for path, value in fields.items():
            for parts in expander.expand(doc, path):
                ops.append((parts, op, value))
    ops.sort(key=lambda t: [(0, int(p), '') if p.isdigit() else (1, 0, p) for p in t[0]])
    for parts, op, value in ops:
        _apply_one(doc, op, parts, value, now)


def _pipeline_stages(pipeline):
    now = datetime.datetime.utcnow()

    def subst(v):   # mongomock has no $$NOW; substitute it up front
        if v == '$$NOW':
            return now.replace(microsecond=now.microsecond // 1000 * 1000)
        if isinstance(v, dict):
            return {k: subst(x) for k, x in v.items()}
        if isinstance(v, list):
            return [subst(x) for x in v]
        return v
    stages = []
    for st in pipeline:
        if not isinstance(st, dict) or len(st) != 1:
            raise CmdError(9, 'A pipeline stage specification object must contain exactly one field.')
        (op, arg), = st.items()
        arg = subst(arg)
        if op in ('$set', '$addFields'):
            # mongomock ignores $$REMOVE; a field set to exactly "$$REMOVE" is dropped instead.
            removed = [k for k, v in arg.items() if v == '$$REMOVE'] if isinstance(arg, dict) else []
            kept = {k: v for k, v in arg.items() if k not in removed} if removed else arg
            if kept:
                stages.append({'$addFields': kept})
            if removed:
                stages.append({'$project': {k: 0 for k in removed}})
        elif op == '$project':
            stages.append({'$project': arg})
        elif op == '$unset':
            stages.append({'$project': {f: 0 for f in ([arg] if isinstance(arg, str) else arg)}})
        elif op == '$replaceRoot':
            stages.append({'$replaceRoot': arg})
        elif op == '$replaceWith':
            stages.append({'$replaceRoot': {'newRoot': arg}})
        else:
            raise CmdError(72, '%s is not allowed to be used within an update' % op)
    return stages


def apply_pipeline(coll, doc, pipeline):
    out = list(aggregate.process_pipeline([copy.deepcopy(doc)], coll.database,
                                          _pipeline_stages(pipeline), None))
    new = out[0] if out else {}
    if '_id' in doc:
        if '_id' in new and not _same(new['_id'], doc['_id']):
            raise CmdError(66, "Performing an update on the path '_id' would modify the immutable field '_id'")
        new = dict([('_id', doc['_id'])] + [(k, v) for k, v in new.items() if k != '_id'])
    return new


def upsert_seed(q):
    """The document an upsert starts from: the query's equality predicates."""
    seed = {}
    for path, cond in _predicates(q):
        if isinstance(cond, dict) and cond and next(iter(cond)).startswith('$'):
            if '$eq' not in cond:
                continue
            cond = cond['$eq']
        if isinstance(cond, (Regex, re.Pattern)):
            continue
        if _get_path(seed, path) is not MISSING:
            raise CmdError(54, "cannot infer query fields to set, path '%s' is matched twice" % path)
        _set_path(seed, path, copy.deepcopy(cond))
    return seed


# --------------------------------------------------------------------------- engine

class EqIndex:
    """Field value -> store keys, for top-level fields that carry an index, so equality
    lookups like {user_id: 5} do not scan the collection (mongomock has no indexes).
    Kept up to date by Engine's write paths; anything else that changes the store (drop,
    TTL expiry, $out) changes the signature and triggers a rebuild. It only narrows the
    candidates: the full matcher still checks each one."""

    def __init__(self):
        self.sig, self.buckets, self.wild, self.seq = None, {}, {}, {}
        self.counter = itertools.count()

    @staticmethod
    def _sig(coll):
        docs = coll._store._documents
        fields = frozenset(ix['key'][0][0] for ix in coll._store.indexes.values()
                           if '.' not in ix['key'][0][0])
        return id(docs), len(docs), fields

    def refresh(self, coll):
        sig = self._sig(coll)
        if sig != self.sig:
            self.buckets = {f: {} for f in sig[2]}
            self.wild = {f: set() for f in sig[2]}
            self.seq = {}
            for key, doc in coll._store._documents.items():
                self.add(key, doc)
            self.sig = sig
        return self

    def touch(self, coll):
        self.sig = self._sig(coll)

    def _values(self, doc, field):
        v = doc.get(field, MISSING)
        for x in (v if isinstance(v, list) else [v]):
            if x is not MISSING:
                yield x

    def add(self, key, doc):
        self.seq.setdefault(key, next(self.counter))
        for field, bucket in self.buckets.items():
            for v in self._values(doc, field):
                try:
                    if isinstance(v, bson.decimal128.Decimal128):
                        raise TypeError
                    bucket.setdefault(v, set()).add(key)
                except TypeError:           # unhashable / odd numeric type: always a candidate
                    self.wild[field].add(key)

    def remove(self, key, doc, keep_seq=False):
        if not keep_seq:
            self.seq.pop(key, None)
        for field, bucket in self.buckets.items():
            self.wild[field].discard(key)
            for v in self._values(doc, field):
                try:
                    bucket.get(v, set()).discard(key)
                except TypeError:
                    pass

    def candidates(self, field, value):
        if field not in self.buckets:
            return None
        keys = self.buckets[field].get(value, set()) | self.wild[field]
        return sorted(keys, key=lambda k: self.seq.get(k, -1))


class Engine:
    """All data plus the one lock that serialises every engine call (mongomock is not
    thread safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.client = mongomock.MongoClient()
        self.client._server_version = '5.0.0'
        self.cursors = {}
        self.cursor_ids = itertools.count(1000001)
        self.started = time.time()
        self.conn_lock = threading.Lock()
        self.conn_current = 0
        self.conn_total = 0
        self.conn_socks = set()
        self.opcounters = dict.fromkeys(('insert', 'query', 'update', 'delete', 'getmore', 'command'), 0)
        self.indexes = {}

    def eq_index(self, coll):
        return self.indexes.setdefault(coll.full_name, EqIndex()).refresh(coll)

    def coll(self, db, name):
        if not isinstance(name, str) or not name or '$' in name or '\0' in name:
            raise CmdError(73, 'Invalid namespace specified \'%s.%s\'' % (db, name))
        return self.client[db][name]

    # -- storage helpers (store keys mirror mongomock's: hashdict for document _ids)
    @staticmethod
    def _key(_id):
        return helpers.hashdict(_id) if isinstance(_id, dict) else _id

    def matching(self, coll, q):
        """The stored documents matching q (the real objects, not copies)."""
        if not isinstance(q, dict):
            raise CmdError(14, 'filter must be an object')
        if set(q) == {'_id'} and _plain_scalar(q['_id']):
            # Primary-key lookups (every per-document update does one) go straight to the store.
            try:
                doc = coll._store[q['_id']]
            except KeyError:
                return []
            return [doc] if filtering.filter_applies(q, doc) else []
        docs = None
        equalities = [(k, c['$eq'] if isinstance(c, dict) and list(c) == ['$eq'] else c) for k, c in q.items()
                      if not k.startswith('$') and '.' not in k]
        equalities = [(k, c) for k, c in equalities if _plain_scalar(c)]
        if equalities:
            index = self.eq_index(coll)
            for key, cond in equalities:
                keys = index.candidates(key, cond)
                if keys is not None:
                    store = coll._store._documents
                    docs = [store[k] for k in keys if k in store]
                    break
            else:
                # No index: a cheap pre-check on one equality still beats mongomock's matcher.
                key, cond = equalities[0]
                docs = [d for d in coll._store.documents if _may_equal(d.get(key, MISSING), cond)]
            if not docs:
                filtering.filter_applies(q, {})     # still reject a malformed filter
        if docs is None:
            # {user_id: {$in: [...]}} (the module's batched lookups): one bucket per value,
            # as mongod walks its index once per key
            for key, cond in q.items():
                if (key.startswith('$') or '.' in key or not isinstance(cond, dict)
                        or list(cond) != ['$in'] or not isinstance(cond['$in'], list)
                        or not all(_plain_scalar(v) for v in cond['$in'])):
                    continue
                index = self.eq_index(coll)
                sets = [index.candidates(key, v) for v in cond['$in']]
                if any(c is None for c in sets):
                    break
                store = coll._store._documents
                keys = sorted(set(k for c in sets for k in c), key=lambda k: index.seq.get(k, -1))
                docs = [store[k] for k in keys if k in store]
                if not docs:
                    filtering.filter_applies(q, {})
                break
        if docs is None:
            docs = coll._store.documents
        return [d for d in docs if filtering.filter_applies(q, d)]

    def sorted_matches(self, coll, q, sort):
        docs = self.matching(coll, q)
        for key, direction in reversed(list((sort or {}).items())):
            if isinstance(direction, dict) or key.startswith('$'):
                raise CmdError(238, 'sort by %s is not supported by mongo-standin' % key)
            if direction not in (1, -1):
                raise CmdError(2, '$sort key ordering must be 1 (for ascending) or -1 (for descending)')
            docs.sort(key=lambda d, k=key: filtering.resolve_sort_key(k, d), reverse=direction < 0)
        return docs

    def project(self, coll, doc, projection):
        if not projection:
            return copy.deepcopy(doc)
        try:
            return coll._copy_only_fields(doc, dict(projection), dict)
        except ValueError as e:
            raise CmdError(2, str(e))

    def check_unique(self, coll, doc):
        for name, index in coll._store.indexes.items():
            if not index.get('unique'):
                continue
            keys = [k for k, _ in index['key']]
            values = {k: _index_values(doc, k) for k in keys}
            if index.get('sparse') and all(v is None for k in keys for v in values[k]):
                continue
            spec = {k: {'$eq': v[0]} if len(v) == 1 else {'$in': v} for k, v in values.items()}
            if index.get('partialFilterExpression') is not None:
                if not filtering.filter_applies(index['partialFilterExpression'], doc):
                    continue
                spec = {'$and': [index['partialFilterExpression'], spec]}
            for other in self.matching(coll, spec):
                # Re-check with index semantics: the matcher says true == 1 and ignores
                # key order, index keys don't.
                if other is not doc and all(any(_strict_equal(a, b) for a in values[k]
                                                for b in _index_values(other, k)) for k in keys):
                    shown = {k: v[0] if len(v) == 1 else v for k, v in values.items()}
                    raise CmdError(11000, 'E11000 duplicate key error collection: %s index: %s dup key: %s'
                                   % (coll.full_name, name, _fmt(shown)),
                                   keyPattern=dict(index['key']), keyValue=shown)

    def store_insert(self, coll, doc):
        if '_id' not in doc:
            doc = dict([('_id', ObjectId())] + list(doc.items()))
        elif next(iter(doc)) != '_id':
            doc = dict([('_id', doc['_id'])] + [(k, v) for k, v in doc.items() if k != '_id'])
        if isinstance(doc['_id'], list):
            raise CmdError(2, "can't use an array for _id")
        key = self._key(doc['_id'])
        if key in coll._store:
            raise CmdError(11000, 'E11000 duplicate key error collection: %s index: _id_ dup key: { _id: %s }'
                           % (coll.full_name, _fmt(doc['_id'])),
                           keyPattern={'_id': 1}, keyValue={'_id': doc['_id']})
        index = self.eq_index(coll)
        coll._store[key] = doc
        index.add(key, doc)
        index.touch(coll)
        try:
            self.check_unique(coll, doc)
        except CmdError:
            del coll._store[key]
            index.remove(key, doc)
            index.touch(coll)
            raise
        coll._store.create()
        return doc

    def store_replace(self, coll, old, new):
        key = self._key(old['_id'])
        index = self.eq_index(coll)
        coll._store[key] = new
        index.remove(key, old, keep_seq=True)
        index.add(key, new)
        try:
            self.check_unique(coll, new)
        except CmdError:
            coll._store[key] = old
            index.remove(key, new, keep_seq=True)
            index.add(key, old)
            raise

    def store_delete(self, coll, doc):
        key = self._key(doc['_id'])
        index = self.eq_index(coll)
        del coll._store[key]
        index.remove(key, doc)
        index.touch(coll)

    def update(self, coll, q, u, upsert=False, multi=False, array_filters=None):
        """One update statement. Returns (n, nModified, upserted_id or None, new_doc)."""
        kind = classify_update(u)
        if kind == 'replacement' and multi:
            raise CmdError(9, 'multi update is not supported for replacement-style update')
        if array_filters and kind != 'modifier':
            raise CmdError(72, 'arrayFilters may not be specified for pipeline-style updates'
                           if kind == 'pipeline' else 'Cannot use array filters with a replacement-style update')
        docs = self.matching(coll, q)
        if not multi:
            docs = docs[:1]
        n = modified = 0
        last = None
        for old in docs:
            if kind == 'modifier':
                new = copy.deepcopy(old)
                apply_modifiers(new, u, q, array_filters, False)
                if '_id' not in new or not _same(new['_id'], old['_id']):
                    raise CmdError(66, "Performing an update on the path '_id' would modify the immutable field '_id'")
            elif kind == 'replacement':
                if '_id' in u and not _same(u['_id'], old['_id']):
                    raise CmdError(66, "After applying the update, the (immutable) field '_id' was found to have "
                                       'been altered to _id: %s' % _fmt(u['_id']))
                new = dict([('_id', old['_id'])] + [(k, copy.deepcopy(v)) for k, v in u.items() if k != '_id'])
            else:
                new = apply_pipeline(coll, old, u)
            n += 1
            last = new
            if not _same(old, new):
                self.store_replace(coll, old, new)
                modified += 1
        if n or not upsert:
            return n, modified, None, last
        seed = upsert_seed(q)
        if kind == 'modifier':
            doc = seed
            apply_modifiers(doc, u, q, array_filters, True)
        elif kind == 'replacement':
            if '_id' in seed and '_id' in u and not _same(seed['_id'], u['_id']):
                raise CmdError(66, "The _id field cannot be changed from {_id: %s} to {_id: %s}."
                               % (_fmt(seed['_id']), _fmt(u['_id'])))
            doc = dict(([('_id', seed['_id'])] if '_id' in seed else []) + list(copy.deepcopy(u).items()))
        else:
            doc = apply_pipeline(coll, seed, u)
        doc = self.store_insert(coll, doc)
        return 1, 0, doc['_id'], doc

    # -- cursors
    def open_cursor(self, ns, raws):
        now = time.time()
        for cid in [c for c, cur in self.cursors.items() if now - cur['used'] > 600]:
            del self.cursors[cid]       # idle timeout, like the server's 10 minutes
        cid = next(self.cursor_ids)
        self.cursors[cid] = {'ns': ns, 'raws': raws, 'used': now}
        return cid


def take_batch(raws, limit):
    """Split off a batch: at most `limit` docs (None = no limit) and about 16 MiB."""
    size, n = 0, 0
    for raw in raws:
        if (limit is not None and n >= limit) or (n and size + len(raw) > MAX_BSON - 16 * 1024):
            break
        size += len(raw)
        n += 1
    return [RawBSONDocument(r) for r in raws[:n]], raws[n:]


def cursor_reply(engine, ns, docs, first_limit, single=False, key='firstBatch'):
    raws = [bson.encode(d, codec_options=CODEC) for d in docs]
    batch, rest = take_batch(raws, first_limit)
    cid = engine.open_cursor(ns, rest) if rest and not single else 0
    return {'cursor': {key: batch, 'id': Int64(cid), 'ns': ns}, 'ok': 1.0}


# --------------------------------------------------------------------------- commands

COMMANDS = {}
NO_LOCK = set()


def command(*names, lock=True):
    def deco(fn):
        for n in names:
            COMMANDS[n] = fn
            if not lock:
                NO_LOCK.add(n)
        return fn
    return deco


def _int(v, default=0):
    if v is None:
        return default
    if not _is_number(v):
        raise CmdError(14, 'expected a number, got %s' % _type_name(v))
    return int(v)


@command('hello', 'isMaster', 'ismaster', lock=False)
def cmd_hello(engine, db, cmd, conn):
    reply = {'ismaster': True, 'helloOk': True, 'maxBsonObjectSize': MAX_BSON,
             'maxMessageSizeBytes': MAX_MESSAGE, 'maxWriteBatchSize': 100000,
             'localTime': datetime.datetime.utcnow().replace(microsecond=0),
             'logicalSessionTimeoutMinutes': 30, 'connectionId': conn.conn_id,
             'minWireVersion': 0, 'maxWireVersion': 13, 'readOnly': False, 'ok': 1.0}
    if next(iter(cmd)) == 'hello':
        reply['isWritablePrimary'] = True
    return reply


@command('ping', 'endSessions', 'refreshSessions', 'startSession', 'getLastError',
         'logout', 'getFreeMonitoringStatus', lock=False)
def cmd_ok(engine, db, cmd, conn):
    return {'ok': 1.0}


@command('buildInfo', 'buildinfo', lock=False)
def cmd_buildinfo(engine, db, cmd, conn):
    return {'version': '5.0.0-standin', 'versionArray': [5, 0, 0, 0], 'gitVersion': 'standin',
            'bits': 64, 'debug': False, 'maxBsonObjectSize': MAX_BSON,
            'storageEngines': ['mongomock'], 'modules': [], 'ok': 1.0}


@command('getParameter', lock=False)
def cmd_getparameter(engine, db, cmd, conn):
    known = {'featureCompatibilityVersion': {'version': '5.0'}, 'authenticationMechanisms': [],
             'transactionLifetimeLimitSeconds': 60, 'logLevel': 0}
    if cmd['getParameter'] in ('*', {'allParameters': True}):
        return dict(known, ok=1.0)
    reply = {k: known[k] for k in cmd if k in known}
    return dict(reply, ok=1.0)


@command('hostInfo', 'getCmdLineOpts', 'whatsmyuri', 'connectionStatus', 'getLog', 'listCommands',
         lock=False)
def cmd_trivia(engine, db, cmd, conn):
    name = next(iter(cmd))
    extra = {
        'hostInfo': {'system': {'hostname': socket.gethostname(), 'numCores': os.cpu_count()},
                     'os': {'type': 'Linux'}, 'extra': {}},
        'getCmdLineOpts': {'argv': sys.argv, 'parsed': {}},
        'whatsmyuri': {'you': '%s:%d' % conn.client_address[:2]},
        'connectionStatus': {'authInfo': {'authenticatedUsers': [], 'authenticatedUserRoles': []}},
        'getLog': {'totalLinesWritten': 0, 'log': [], 'names': ['global', 'startupWarnings']},
        'listCommands': {'commands': {n: {} for n in COMMANDS}},
    }[name]
    return dict(extra, ok=1.0)


@command('serverStatus', lock=False)
def cmd_serverstatus(engine, db, cmd, conn):
    up = time.time() - engine.started
    with engine.conn_lock:
        conns = {'current': engine.conn_current, 'available': 50000 - engine.conn_current,
                 'totalCreated': engine.conn_total, 'active': 1}
    return {'host': socket.gethostname(), 'version': '5.0.0-standin', 'process': 'mongod',
            'pid': Int64(os.getpid()), 'uptime': float(int(up)), 'uptimeMillis': Int64(int(up * 1000)),
            'uptimeEstimate': Int64(int(up)), 'localTime': datetime.datetime.utcnow().replace(microsecond=0),
            'connections': conns, 'opcounters': dict(engine.opcounters), 'ok': 1.0}


@command('find')
def cmd_find(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['find'])
    engine.opcounters['query'] += 1
    if cmd.get('tailable') or cmd.get('awaitData'):
        raise CmdError(238, 'tailable cursors are not supported by mongo-standin')
    limit, skip = _int(cmd.get('limit')), _int(cmd.get('skip'))
    if skip < 0 or _int(cmd.get('batchSize')) < 0:
        raise CmdError(2, 'skip and batchSize must be non-negative')
    single = bool(cmd.get('singleBatch')) or limit < 0
    limit = abs(limit)
    docs = engine.sorted_matches(coll, cmd.get('filter') or {}, cmd.get('sort'))
    docs = docs[skip:skip + limit] if limit else docs[skip:]
    docs = [engine.project(coll, d, cmd.get('projection')) for d in docs]
    # First batch: 101 documents unless batchSize says otherwise (0 = open the cursor only).
    return cursor_reply(engine, coll.full_name, docs, _int(cmd.get('batchSize'), 101), single)


@command('getMore')
def cmd_getmore(engine, db, cmd, conn):
    engine.opcounters['getmore'] += 1
    cid = _int(cmd['getMore'])
    cur = engine.cursors.get(cid)
    if cur is None:
        raise CmdError(43, 'cursor id %d not found' % cid)
    batch, rest = take_batch(cur['raws'], _int(cmd.get('batchSize')) or None)
    if rest:
        cur['raws'], cur['used'] = rest, time.time()
    else:
        del engine.cursors[cid]
        cid = 0
    return {'cursor': {'nextBatch': batch, 'id': Int64(cid), 'ns': cur['ns']}, 'ok': 1.0}


@command('killCursors')
def cmd_killcursors(engine, db, cmd, conn):
    killed, missing = [], []
    for cid in cmd.get('cursors', []):
        (killed if engine.cursors.pop(int(cid), None) else missing).append(Int64(cid))
    return {'cursorsKilled': killed, 'cursorsNotFound': missing, 'cursorsAlive': [],
            'cursorsUnknown': [], 'ok': 1.0}


def _write_result(n, errors, extra=None):
    reply = {'n': n}
    reply.update(extra or {})
    if errors:
        reply['writeErrors'] = errors
    reply['ok'] = 1.0
    return reply


def _write_error(index, err):
    d = {'index': index, 'code': err.code, 'codeName': CODE_NAMES.get(err.code, 'UnknownError'),
         'errmsg': err.msg}
    d.update(err.extra)
    return d


@command('insert')
def cmd_insert(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['insert'])
    n, errors = 0, []
    for i, doc in enumerate(cmd.get('documents', [])):
        engine.opcounters['insert'] += 1
        try:
            if not isinstance(doc, dict):
                raise CmdError(14, 'documents must be objects')
            engine.store_insert(coll, doc)
            n += 1
        except Exception as e:      # per-statement failures are writeErrors, not ok:0
            errors.append(_write_error(i, as_cmd_error(e)))
            if cmd.get('ordered', True):
                break
    if n >= 100:
        # A bulk load (the bench's 100 000 documents): what is stored stays, so keep
        # it out of the cyclic collector's full passes, which otherwise walk millions
        # of objects and stop every connection for a second or more (lookups then
        # hit the module's 1 s budget). Refcounting still frees what is deleted.
        gc.freeze()
    return _write_result(n, errors)


@command('update')
def cmd_update(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['update'])
    n = modified = 0
    upserted, errors = [], []
    for i, st in enumerate(cmd.get('updates', [])):
        engine.opcounters['update'] += 1
        try:
            if 'q' not in st or 'u' not in st:
                raise CmdError(9, "BSON field 'update.updates.%s' is missing but a required field"
                               % ('q' if 'q' not in st else 'u'))
            sn, sm, uid, _ = engine.update(coll, st['q'], st['u'], bool(st.get('upsert')),
                                           bool(st.get('multi')), st.get('arrayFilters'))
            n += sn
            modified += sm
            if uid is not None:
                upserted.append({'index': i, '_id': uid})
        except Exception as e:      # per-statement failures are writeErrors, not ok:0
            errors.append(_write_error(i, as_cmd_error(e)))
            if cmd.get('ordered', True):
                break
    extra = {'nModified': modified}
    if upserted:
        extra['upserted'] = upserted
    return _write_result(n, errors, extra)


@command('delete')
def cmd_delete(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['delete'])
    n, errors = 0, []
    for i, st in enumerate(cmd.get('deletes', [])):
        engine.opcounters['delete'] += 1
        try:
            if 'q' not in st or 'limit' not in st:
                raise CmdError(9, "BSON field 'delete.deletes.%s' is missing but a required field"
                               % ('q' if 'q' not in st else 'limit'))
            limit = _int(st['limit'])
            if limit not in (0, 1):
                raise CmdError(9, 'The limit field in delete objects must be 0 or 1. Got %d' % limit)
            docs = engine.matching(coll, st['q'])
            for doc in docs[:1] if limit else docs:
                engine.store_delete(coll, doc)
                n += 1
        except Exception as e:      # per-statement failures are writeErrors, not ok:0
            errors.append(_write_error(i, as_cmd_error(e)))
            if cmd.get('ordered', True):
                break
    return _write_result(n, errors)


@command('findAndModify', 'findandmodify')
def cmd_findandmodify(engine, db, cmd, conn):
    coll = engine.coll(db, cmd[next(iter(cmd))])
    q = cmd.get('query') or {}
    update, remove, new = cmd.get('update'), bool(cmd.get('remove')), bool(cmd.get('new'))
    upsert, fields = bool(cmd.get('upsert')), cmd.get('fields')
    if remove and update is not None:
        raise CmdError(9, 'Cannot specify both an update and remove=true')
    if remove and upsert:
        raise CmdError(9, 'Cannot specify both upsert=true and remove=true')
    if remove and new:
        raise CmdError(9, "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document")
    if not remove and update is None:
        raise CmdError(9, 'Either an update or remove=true must be specified')
    engine.opcounters['command'] += 1
    docs = engine.sorted_matches(coll, q, cmd.get('sort'))
    target = docs[0] if docs else None
    if remove:
        if target is not None:
            engine.store_delete(coll, target)
        return {'lastErrorObject': {'n': 1 if target is not None else 0},
                'value': engine.project(coll, target, fields) if target is not None else None, 'ok': 1.0}
    if target is None and not upsert:
        return {'lastErrorObject': {'n': 0, 'updatedExisting': False}, 'value': None, 'ok': 1.0}
    before = engine.project(coll, target, fields) if target is not None else None
    if target is not None:
        # Pin the chosen document by _id but keep the query so positional `$` resolves.
        spec = dict(q)
        spec['$and'] = list(q.get('$and', [])) + [{'_id': target['_id']}]
        n, _, uid, after = engine.update(coll, spec, update, False, False, cmd.get('arrayFilters'))
    else:
        n, _, uid, after = engine.update(coll, q, update, True, False, cmd.get('arrayFilters'))
    leo = {'n': n, 'updatedExisting': target is not None}
    if uid is not None:
        leo['upserted'] = uid
    value = engine.project(coll, after, fields) if new else before
    return {'lastErrorObject': leo, 'value': value, 'ok': 1.0}


@command('count')
def cmd_count(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['count'])
    engine.opcounters['command'] += 1
    docs = engine.matching(coll, cmd.get('query') or {})
    skip, limit = _int(cmd.get('skip')), abs(_int(cmd.get('limit')))
    docs = docs[skip:skip + limit] if limit else docs[skip:]
    return {'n': len(docs), 'ok': 1.0}


@command('distinct')
def cmd_distinct(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['distinct'])
    if not isinstance(cmd.get('key'), str):
        raise CmdError(14, "BSON field 'distinct.key' is missing or not a string")
    return {'values': list(coll.distinct(cmd['key'], cmd.get('query') or {})), 'ok': 1.0}


@command('aggregate')
def cmd_aggregate(engine, db, cmd, conn):
    if not isinstance(cmd['aggregate'], str):
        raise CmdError(238, 'database-level aggregate is not supported by mongo-standin')
    coll = engine.coll(db, cmd['aggregate'])
    engine.opcounters['command'] += 1
    pipeline = cmd.get('pipeline')
    if not isinstance(pipeline, list):
        raise CmdError(14, "'pipeline' option must be specified as an array")
    if 'cursor' not in cmd and not cmd.get('explain'):
        raise CmdError(9, "The 'cursor' option is required, except for aggregate with the explain argument")
    docs = list(aggregate.process_pipeline(
        [copy.deepcopy(d) for d in coll._store.documents], coll.database, pipeline, None))
    return cursor_reply(engine, coll.full_name, docs, _int((cmd.get('cursor') or {}).get('batchSize'), 101))


def _index_docs(coll):
    out = [{'v': 2, 'key': {'_id': 1}, 'name': '_id_'}]
    for name, ix in coll._store.indexes.items():
        d = {'v': 2, 'key': dict(ix['key']), 'name': name}
        d.update({k: v for k, v in ix.items() if k != 'key'})
        out.append(d)
    return out


@command('createIndexes')
def cmd_createindexes(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['createIndexes'])
    created = not coll._store.is_created
    before = len(_index_docs(coll))
    for spec in cmd.get('indexes', []):
        key = spec.get('key')
        if not isinstance(key, dict) or not key or 'name' not in spec:
            raise CmdError(9, "Error in specification %s :: caused by :: The 'key' and 'name' fields are required"
                           % _fmt(spec))
        if list(key) == ['_id']:
            continue
        existing = coll._store.indexes.get(spec['name'])
        opts = {k: spec[k] for k in ('unique', 'sparse', 'expireAfterSeconds', 'partialFilterExpression')
                if spec.get(k) not in (None, False)}
        if existing is not None:
            if dict(existing['key']) != key or {k: v for k, v in existing.items() if k != 'key'} != opts:
                raise CmdError(85, 'An existing index has the same name as the requested index. '
                                   'Requested index: %s, existing index: %s' % (_fmt(spec), _fmt(existing)))
            continue
        try:
            coll.create_index(list(key.items()), name=spec['name'], **opts)
        except DuplicateKeyError:
            raise CmdError(11000, 'Index build failed: E11000 duplicate key error collection: %s index: %s'
                           % (coll.full_name, spec['name']))
    coll._store.create()
    after = len(_index_docs(coll))
    reply = {'createdCollectionAutomatically': created, 'numIndexesBefore': before,
             'numIndexesAfter': after, 'ok': 1.0}
    if before == after:
        reply['note'] = 'all indexes already exist'
    return reply


@command('listIndexes')
def cmd_listindexes(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['listIndexes'])
    if not coll._store.is_created:
        raise CmdError(26, 'ns does not exist: %s' % coll.full_name)
    return cursor_reply(engine, coll.full_name, _index_docs(coll), None)


@command('dropIndexes', 'deleteIndexes')
def cmd_dropindexes(engine, db, cmd, conn):
    coll = engine.coll(db, cmd[next(iter(cmd))])
    if not coll._store.is_created:
        raise CmdError(26, 'ns not found %s' % coll.full_name)
    before = len(_index_docs(coll))
    which = cmd.get('index')
    names = []
    if which == '*':
        names = list(coll._store.indexes)
    else:
        for w in which if isinstance(which, list) else [which]:
            if isinstance(w, dict):
                hit = [n for n, ix in coll._store.indexes.items() if dict(ix['key']) == w]
                if not hit:
                    raise CmdError(27, "can't find index with key: %s" % _fmt(w))
                names += hit
            elif w == '_id_':
                raise CmdError(72, 'cannot drop _id index')
            elif w not in coll._store.indexes:
                raise CmdError(27, 'index not found with name [%s]' % w)
            else:
                names.append(w)
    for name in names:
        coll._store.drop_index(name)
    return {'nIndexesWas': before, 'ok': 1.0}


@command('drop')
def cmd_drop(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['drop'])
    if not coll._store.is_created:
        raise CmdError(26, 'ns not found')
    n = len(_index_docs(coll))
    engine.client[db].drop_collection(cmd['drop'])
    return {'nIndexesWas': n, 'ns': coll.full_name, 'ok': 1.0}


@command('dropDatabase')
def cmd_dropdatabase(engine, db, cmd, conn):
    engine.client.drop_database(db)
    return {'dropped': db, 'ok': 1.0}


@command('create')
def cmd_create(engine, db, cmd, conn):
    coll = engine.coll(db, cmd['create'])
    if coll._store.is_created:
        raise CmdError(48, 'Collection already exists. NS: %s' % coll.full_name)
    coll._store.create()
    return {'ok': 1.0}


@command('listCollections')
def cmd_listcollections(engine, db, cmd, conn):
    infos = []
    for name in engine.client[db].list_collection_names():
        info = {'name': name, 'type': 'collection', 'options': {}, 'info': {'readOnly': False},
                'idIndex': {'v': 2, 'key': {'_id': 1}, 'name': '_id_'}}
        if cmd.get('nameOnly'):
            info = {'name': name, 'type': 'collection'}
        if filtering.filter_applies(cmd.get('filter') or {}, info):
            infos.append(info)
    return cursor_reply(engine, '%s.$cmd.listCollections' % db, infos, None)


@command('listDatabases')
def cmd_listdatabases(engine, db, cmd, conn):
    dbs = [{'name': n, 'sizeOnDisk': 8192.0, 'empty': False}
           for n in engine.client.list_database_names()]
    dbs = [d for d in dbs if filtering.filter_applies(cmd.get('filter') or {}, d)]
    if cmd.get('nameOnly'):
        dbs = [{'name': d['name']} for d in dbs]
    return {'databases': dbs, 'totalSize': 8192.0 * len(dbs), 'ok': 1.0}


def as_cmd_error(e):
    """Map an exception from the engine to the error MongoDB would report."""
    if isinstance(e, CmdError):
        return e
    if isinstance(e, DuplicateKeyError):
        return CmdError(11000, 'E11000 duplicate key error: %s' % e)
    if isinstance(e, OperationFailure):
        return CmdError(e.code or 2, str(e))
    if isinstance(e, NotImplementedError):
        return CmdError(238, 'not supported by mongo-standin: %s' % e)
    if isinstance(e, (ValueError, KeyError, bson.errors.BSONError)):
        return CmdError(2, '%s: %s' % (type(e).__name__, e))
    if isinstance(e, TypeError):
        return CmdError(14, str(e))
    traceback.print_exc(file=sys.stderr)    # a bug here must not kill the connection thread
    return CmdError(1, 'mongo-standin internal error: %s: %s' % (type(e).__name__, e))


def run_command(engine, db, cmd, conn):
    """Dispatch one command document; always returns a reply document."""
    if not cmd:
        return CmdError(59, 'no such command: \'\'').doc()
    name = next(iter(cmd))
    handler = COMMANDS.get(name)
    if handler is None:
        return CmdError(59, "no such command: '%s'" % name).doc()
    try:
        if name in NO_LOCK:
            return handler(engine, db, cmd, conn)
        with engine.lock:
            reply = handler(engine, db, cmd, conn)
            # Encode while still holding the lock: replies may share sub-objects with the
            # store, which other threads could mutate under us.
            return RawBSONDocument(bson.encode(reply, codec_options=CODEC))
    except Exception as e:
        return as_cmd_error(e).doc()


# --------------------------------------------------------------------------- wire protocol

def parse_op_msg(payload):
    flags, = struct.unpack_from('<I', payload, 0)
    end = len(payload) - (4 if flags & 1 else 0)     # checksumPresent: drop the CRC-32C
    pos, body, seqs = 4, None, {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        size, = struct.unpack_from('<i', payload, pos)
        if kind == 0:
            body = bson.decode(payload[pos:pos + size], codec_options=CODEC)
        elif kind == 1:
            nul = payload.index(b'\0', pos + 4)
            ident = payload[pos + 4:nul].decode()
            seqs.setdefault(ident, []).extend(bson.decode_all(payload[nul + 1:pos + size], CODEC))
        else:
            raise ValueError('unknown OP_MSG section kind %d' % kind)
        pos += size
    if body is None:
        raise ValueError('OP_MSG without a body section')
    body.update(seqs)
    return flags, body


def build_msg(request_id, response_to, doc):
    payload = b'\0\0\0\0\0' + bson.encode(doc, codec_options=CODEC)
    return HDR.pack(16 + len(payload), request_id, response_to, OP_MSG) + payload


def build_reply(request_id, response_to, doc, flags=8):
    payload = struct.pack('<iqii', flags, 0, 0, 1) + bson.encode(doc, codec_options=CODEC)
    return HDR.pack(16 + len(payload), request_id, response_to, OP_REPLY) + payload


REQUEST_IDS = itertools.count(1)


class Connection(socketserver.BaseRequestHandler):
    engine = None           # set by main()
    verbose = False

    def recv_exact(self, n):
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.request.recv_into(view[got:])
            if not k:
                return None
            got += k
        return bytes(buf)

    def handle(self):
        engine = self.engine
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with engine.conn_lock:
            engine.conn_current += 1
            engine.conn_total += 1
            self.conn_id = engine.conn_total
            engine.conn_socks.add(sock)
        try:
            while True:
                hdr = self.recv_exact(16)
                if hdr is None:
                    return
                length, req_id, _, opcode = HDR.unpack(hdr)
                if length < 16 or length > MAX_MESSAGE:
                    return
                payload = self.recv_exact(length - 16)
                if payload is None:
                    return
                out = self.process(req_id, opcode, payload)
                if out:
                    sock.sendall(out)
        except OSError:
            return          # client went away mid-message: just drop the connection
        except Exception as e:  # garbage on the wire: log it and drop the connection
            print('mongo-standin: dropping connection %d: %s: %s' % (self.conn_id, type(e).__name__, e),
                  file=sys.stderr, flush=True)
        finally:
            with engine.conn_lock:
                engine.conn_current -= 1
                engine.conn_socks.discard(sock)

    def process(self, req_id, opcode, payload):
        engine = self.engine
        if opcode == OP_MSG:
            try:
                flags, body = parse_op_msg(payload)
            except Exception as e:
                return build_msg(next(REQUEST_IDS), req_id, CmdError(9, 'bad OP_MSG: %s' % e).doc())
            db = body.pop('$db', None) or 'admin'
            reply = run_command(engine, db, body, self)
            self.log(db, body, reply)
            if flags & 2:       # moreToCome: the client wants no answer
                return None
            return build_msg(next(REQUEST_IDS), req_id, reply)
        if opcode == OP_QUERY:
            nul = payload.index(b'\0', 4)
            ns = payload[4:nul].decode()
            query = bson.decode(payload[nul + 9:nul + 9 + struct.unpack_from('<i', payload, nul + 9)[0]],
                                codec_options=CODEC)
            if not ns.endswith('.$cmd'):
                return build_reply(next(REQUEST_IDS), req_id, {
                    '$err': 'legacy OP_QUERY reads are not supported by mongo-standin', 'code': 238}, flags=2)
            if '$query' in query:       # legacy wrapping used to carry $readPreference
                query = query['$query']
            db = ns[:-5]
            reply = run_command(engine, db, query, self)
            self.log(db, query, reply)
            return build_reply(next(REQUEST_IDS), req_id, reply)
        # OP_COMPRESSED is never advertised; other legacy opcodes are gone since 5.1.
        raise ValueError('unsupported opcode %d' % opcode)

    def log(self, db, cmd, reply):
        if self.verbose:
            if isinstance(reply, RawBSONDocument):
                reply = bson.decode(reply.raw, codec_options=CODEC)
            sys.stderr.write('[%d] %s %s -> %s\n' % (self.conn_id, db, cmd, reply))
            sys.stderr.flush()


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=27017)
    ap.add_argument('--pidfile')
    ap.add_argument('--verbose', action='store_true', help='log every command to stderr')
    args = ap.parse_args(argv)

    Connection.engine = Engine()
    Connection.verbose = args.verbose
    gc_pause = {}

    def gc_watch(phase, info):
        # a long full collection stops every client: say so, with its length
        if phase == 'start':
            gc_pause['t'] = time.monotonic()
        elif info.get('generation') == 2 and 't' in gc_pause:
            took = time.monotonic() - gc_pause.pop('t')
            if took > 0.1:
                print('mongo-standin: a full garbage collection stopped the server for %.0f ms'
                      % (took * 1000), file=sys.stderr, flush=True)
    gc.callbacks.append(gc_watch)
    server = Server((args.host, args.port), Connection)
    if args.pidfile:
        with open(args.pidfile, 'w') as f:
            f.write('%d\n' % os.getpid())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    print('mongo-standin listening on %s:%d' % (host, port), flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    with Connection.engine.conn_lock:       # let clients see the close at once
        for s in list(Connection.engine.conn_socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
