
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The reference the fuzz targets compare src/ with: the read path as it was
 * before the canonical writer (render.c), BSON and MySQL rows turned into
 * jansson trees and dumped with JSON_COMPACT | JSON_SORT_KEYS.  The code is
 * the old one (json.c's bson_to_json, bson_container, bson_date,
 * entry_from_bson, filter_passes and find_pass; mysql.c's pass_object),
 * renamed and kept here, independent of src/ except for
 * ngx_http_bytemark_json_normalize(), which the old path called too and
 * which src/ still has unchanged (ingest uses it).
 *
 * Do not "fix" this file to follow src/: it is what src/ must agree with.
 */

#include "fuzz.h"


/* the old converter's depth limit */
#define REF_MAX_DEPTH  64


static json_t *bytemark_ref_bson_container(const bson_iter_t *it,
    ngx_uint_t depth, ngx_uint_t array);
static json_t *bytemark_ref_bson_date(int64_t ms);
static ngx_int_t bytemark_ref_passes_from_bson(bson_iter_t *it,
    json_t **out);


/*
 * BYTEMARK_FUZZ_STRICT=1: the old behaviour exactly, including where src/
 * departs from it on purpose (the DIVERGENCE notes below)
 */

int
bytemark_ref_strict(void)
{
    static int  strict = -1;

    const char  *v;

    if (strict < 0) {
        v = getenv("BYTEMARK_FUZZ_STRICT");
        strict = (v != NULL && v[0] != '\0' && strcmp(v, "0") != 0);
    }

    return strict;
}


json_t *
bytemark_ref_bson_to_json(const bson_iter_t *it, ngx_uint_t depth)
{
    char                 oid[25];
    double               d;
    uint32_t             len;
    const char          *s, *opts;
    bson_decimal128_t    dec;
    char                 decstr[BSON_DECIMAL128_STRING];
    uint32_t             ts, inc;
    const uint8_t       *bin;
    bson_subtype_t       subtype;
    ngx_str_t            src, dst;
    json_t              *v;

    switch (bson_iter_type(it)) {

    case BSON_TYPE_DOUBLE:
        d = bson_iter_double(it);

        if (d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0) {
            /* JSON has no NaN or infinity */
            return json_null();
        }

        /* in range first: casting a larger double to int64_t is undefined */
        if (d <= 9007199254740992.0 && d >= -9007199254740992.0
            && d == (double) (int64_t) d)
        {
            return json_integer((json_int_t) d);
        }

        return json_real(d);

    case BSON_TYPE_INT32:
        return json_integer(bson_iter_int32(it));

    case BSON_TYPE_INT64:
        return json_integer(bson_iter_int64(it));

    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        /* NULL when it is not valid UTF-8: the caller calls that malformed */
        return json_stringn(s, len);

    case BSON_TYPE_DOCUMENT:
        return bytemark_ref_bson_container(it, depth + 1, 0);

    case BSON_TYPE_ARRAY:
        return bytemark_ref_bson_container(it, depth + 1, 1);

    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), oid);
        return json_string(oid);

    case BSON_TYPE_DATE_TIME:
        return bytemark_ref_bson_date(bson_iter_date_time(it));

    case BSON_TYPE_BOOL:
        return json_boolean(bson_iter_bool(it));

    case BSON_TYPE_DECIMAL128:
        if (!bson_iter_decimal128(it, &dec)) {
            return NULL;
        }

        bson_decimal128_to_string(&dec, decstr);
        return json_string(decstr);

    case BSON_TYPE_TIMESTAMP:
        bson_iter_timestamp(it, &ts, &inc);
        return json_pack("{sIsI}", "t", (json_int_t) ts, "i", (json_int_t) inc);

    case BSON_TYPE_BINARY:
        bson_iter_binary(it, &subtype, &len, &bin);

        src.data = (u_char *) bin;
        src.len = len;
        dst.len = ngx_base64_encoded_length(len);
        dst.data = malloc(dst.len);   /* a thread: no nginx pool here */
        if (dst.data == NULL) {
            return NULL;
        }

        ngx_encode_base64(&dst, &src);
        v = json_stringn((char *) dst.data, dst.len);
        free(dst.data);
        return v;

    case BSON_TYPE_REGEX:
        s = bson_iter_regex(it, &opts);
        return json_pack("{ssss}", "$regex", s, "$options", opts);

    case BSON_TYPE_CODE:
        s = bson_iter_code(it, &len);
        return json_stringn(s, len);

    case BSON_TYPE_SYMBOL:
        s = bson_iter_symbol(it, &len);
        return json_stringn(s, len);

    default:
        /* null, undefined, minkey, maxkey, dbpointer, code with scope */
        return json_null();
    }
}


static json_t *
bytemark_ref_bson_container(const bson_iter_t *it, ngx_uint_t depth,
    ngx_uint_t array)
{
    json_t       *out, *v;
    bson_iter_t   child;

    if (depth > REF_MAX_DEPTH || !bson_iter_recurse(it, &child)) {
        return NULL;
    }

    out = array ? json_array() : json_object();
    if (out == NULL) {
        return NULL;
    }

    while (bson_iter_next(&child)) {
        v = bytemark_ref_bson_to_json(&child, depth);
        if (v == NULL) {
            json_decref(out);
            return NULL;
        }

        if (array) {
            if (json_array_append_new(out, v) != 0) {
                json_decref(out);
                return NULL;
            }

            continue;
        }

        if (json_object_set_new(out, bson_iter_key(&child), v) != 0) {
            json_decref(out);
            return NULL;
        }
    }

    return out;
}


static json_t *
bytemark_ref_bson_date(int64_t ms)
{
    char  buf[NGX_HTTP_BYTEMARK_ISO_LEN];

    ngx_http_bytemark_iso_time(ms, buf);

    return json_string(buf);
}


/* the old entry_from_bson(): NGX_OK or NGX_ERROR; e is zeroed first */

ngx_int_t
bytemark_ref_entry(const bson_t *doc, bytemark_ref_entry_t *e)
{
    const char   *key;
    bson_iter_t   it;

    ngx_memzero(e, sizeof(bytemark_ref_entry_t));

    if (!bson_iter_init(&it, doc)) {
        return NGX_ERROR;
    }

    while (bson_iter_next(&it)) {
        key = bson_iter_key(&it);

        if (strcmp(key, "passes") == 0) {
            if (bytemark_ref_passes_from_bson(&it, &e->passes[0]) != NGX_OK) {
                return NGX_ERROR;
            }

        } else if (strcmp(key, "passes4") == 0) {
            if (bytemark_ref_passes_from_bson(&it, &e->passes[1]) != NGX_OK) {
                return NGX_ERROR;
            }

        } else if (strcmp(key, "timestamp") == 0) {
            if (!BSON_ITER_HOLDS_NUMBER(&it)) {
                return NGX_ERROR;
            }

            if (BSON_ITER_HOLDS_DOUBLE(&it)
                && !(bson_iter_double(&it) >= -9223372036854775808.0
                     && bson_iter_double(&it) < 9223372036854775808.0))
            {
                return NGX_ERROR;
            }

            e->timestamp = bson_iter_as_int64(&it);
            e->has_timestamp = 1;

        } else if (strcmp(key, "bytemark_incomplete") == 0) {
            e->incomplete = bson_iter_as_bool(&it);
        }
    }

    /* SPEC 3.1: an entry without a timestamp is malformed (a miss) */
    if (!e->has_timestamp) {
        return NGX_ERROR;
    }

    if (e->passes[0] == NULL) {
        e->passes[0] = json_array();
    }

    if (e->passes[1] == NULL) {
        e->passes[1] = json_array();
    }

    if (e->passes[0] == NULL || e->passes[1] == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
bytemark_ref_entry_free(bytemark_ref_entry_t *e)
{
    if (e->passes[0]) {
        json_decref(e->passes[0]);
    }

    if (e->passes[1]) {
        json_decref(e->passes[1]);
    }

    ngx_memzero(e, sizeof(bytemark_ref_entry_t));
}


static ngx_int_t
bytemark_ref_passes_from_bson(bson_iter_t *it, json_t **out)
{
    size_t        i;
    json_t       *arr;
    bson_iter_t   child;

    if (!BSON_ITER_HOLDS_ARRAY(it)) {
        return NGX_ERROR;
    }

    arr = bytemark_ref_bson_to_json(it, 0);
    if (arr == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < json_array_size(arr); i++) {
        if (!json_is_object(json_array_get(arr, i))) {
            json_decref(arr);
            return NGX_ERROR;
        }
    }

    if (!bytemark_ref_strict()) {
        /*
         * DIVERGENCE: a regex or a timestamp became an object, {"$regex":
         * ..., "$options": ...} or {"t": ..., "i": ...}, so the old code
         * took them for passes; src/ takes only documents
         */
        bson_iter_recurse(it, &child);

        while (bson_iter_next(&child)) {
            if (!BSON_ITER_HOLDS_DOCUMENT(&child)) {
                json_decref(arr);
                return NGX_ERROR;
            }
        }
    }

    if (*out) {
        /* a duplicate key: the last one wins, as in a JavaScript client */
        json_decref(*out);
    }

    *out = arr;

    return NGX_OK;
}


/* the old filter_passes(): a new reference */

json_t *
bytemark_ref_filter(json_t *passes, ngx_array_t *statuses)
{
    size_t       i, len;
    json_t      *out, *pass, *status;
    ngx_str_t   *s;
    ngx_uint_t   k;

    if (statuses == NULL) {
        return json_incref(passes);
    }

    out = json_array();
    if (out == NULL) {
        return NULL;
    }

    s = statuses->elts;

    json_array_foreach(passes, i, pass) {
        status = json_object_get(pass, "status");

        if (!json_is_string(status)) {
            continue;
        }

        len = json_string_length(status);

        for (k = 0; k < statuses->nelts; k++) {
            if (s[k].len == len
                && ngx_memcmp(s[k].data, json_string_value(status), len) == 0)
            {
                if (json_array_append(out, pass) != 0) {
                    json_decref(out);
                    return NULL;
                }

                break;
            }
        }
    }

    return out;
}


/* the old find_pass(): a borrowed reference; *index: its place in its array */

json_t *
bytemark_ref_find(json_t *passes[2], u_char *uuid, ngx_uint_t *version,
    size_t *index)
{
    size_t       i;
    json_t      *pass, *id;
    ngx_uint_t   k;

    for (k = 0; k < 2; k++) {
        if (passes[k] == NULL) {
            continue;
        }

        json_array_foreach(passes[k], i, pass) {
            id = json_object_get(pass, "pass_uuid");

            if (json_is_string(id)
                && json_string_length(id) == NGX_HTTP_BYTEMARK_UUID_LEN
                && ngx_strncasecmp((u_char *) json_string_value(id), uuid,
                                   NGX_HTTP_BYTEMARK_UUID_LEN) == 0)
            {
                *version = (k == 0) ? 3 : 4;
                *index = i;
                return pass;
            }
        }
    }

    return NULL;
}


/*
 * The old payload column of a MySQL row: JSON, numbers normalized; text that
 * is not JSON as a string; NULL when it is neither JSON nor UTF-8 (the old
 * json_pack("o*") then left the key out).
 */

json_t *
bytemark_ref_payload(const u_char *text, size_t len)
{
    json_t        *payload;
    json_error_t   err;

    payload = json_loadb((const char *) text, len,
                         JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    if (payload == NULL) {
        /* not valid JSON: embedded as the string it is */
        return json_stringn((const char *) text, len);
    }

    return ngx_http_bytemark_json_normalize(payload);
}


/* the old mysql.c pass_object(): NULL where json_pack() failed */

json_t *
bytemark_ref_row(ngx_http_bytemark_pass_row_t *row)
{
    json_t  *payload, *hash;

    if (row->payload.data == NULL) {
        payload = json_null();

    } else {
        payload = bytemark_ref_payload(row->payload.data, row->payload.len);
    }

    hash = (row->hash.data == NULL)
           ? json_null()
           : json_stringn((const char *) row->hash.data, row->hash.len);

    return json_pack("{s:s%,s:I,s:s%,s:I,s:o*,s:o*}",
                     "pass_uuid", (const char *) row->uuid.data,
                     row->uuid.len,
                     "timestamp", (json_int_t) row->timestamp,
                     "status", (const char *) row->status.data,
                     row->status.len,
                     "free_ticket_status",
                     (json_int_t) row->free_ticket_status,
                     "payload", payload,
                     "payload_hash", hash);
}


/* json_dumps() as the old responses did; NULL for NULL */

char *
bytemark_ref_dump(json_t *v, size_t flags)
{
    if (v == NULL) {
        return NULL;
    }

    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | flags);
}
