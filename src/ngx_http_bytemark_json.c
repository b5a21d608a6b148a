
/*
 * JSON: BSON cache documents to jansson values (run in pool threads), and
 * the pass-array helpers the handlers use on the event loop.
 *
 * BSON maps to natural JSON: numbers stay numbers (a double that holds an
 * integer, as JavaScript clients write Date.now(), becomes an integer),
 * ObjectId becomes its hex string, a date its ISO-8601 UTC string.
 */


#include "ngx_http_bytemark_module.h"

#include <bson/bson.h>


/* deeper documents are refused rather than risking the thread's stack */
#define NGX_HTTP_BYTEMARK_MAX_DEPTH  64


static json_t *ngx_http_bytemark_bson_container(const bson_iter_t *it,
    ngx_uint_t depth, ngx_uint_t array);
static json_t *ngx_http_bytemark_bson_date(int64_t ms);
static ngx_int_t ngx_http_bytemark_passes_from_bson(bson_iter_t *it,
    json_t **out, char *err, size_t size);


json_t *
ngx_http_bytemark_bson_to_json(const void *iter, ngx_uint_t depth)
{
    const bson_iter_t  *it = iter;

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
        return ngx_http_bytemark_bson_container(it, depth + 1, 0);

    case BSON_TYPE_ARRAY:
        return ngx_http_bytemark_bson_container(it, depth + 1, 1);

    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), oid);
        return json_string(oid);

    case BSON_TYPE_DATE_TIME:
        return ngx_http_bytemark_bson_date(bson_iter_date_time(it));

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
ngx_http_bytemark_bson_container(const bson_iter_t *it, ngx_uint_t depth,
    ngx_uint_t array)
{
    json_t       *out, *v;
    bson_iter_t   child;

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH || !bson_iter_recurse(it, &child)) {
        return NULL;
    }

    out = array ? json_array() : json_object();
    if (out == NULL) {
        return NULL;
    }

    while (bson_iter_next(&child)) {
        v = ngx_http_bytemark_bson_to_json(&child, depth);
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
ngx_http_bytemark_bson_date(int64_t ms)
{
    char  buf[NGX_HTTP_BYTEMARK_ISO_LEN];

    ngx_http_bytemark_iso_time(ms, buf);

    return json_string(buf);
}


/* "2024-11-21T14:40:00.123Z"; safe in threads */

void
ngx_http_bytemark_iso_time(int64_t ms, char *buf)
{
    time_t     sec;
    int64_t    rem;
    struct tm  tm;

    sec = (time_t) (ms / 1000);
    rem = ms % 1000;

    if (rem < 0) {
        rem += 1000;
        sec--;
    }

    if (gmtime_r(&sec, &tm) == NULL) {
        ngx_memzero(&tm, sizeof(struct tm));
    }

    snprintf(buf, NGX_HTTP_BYTEMARK_ISO_LEN,
             "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int) rem);
}


/*
 * A cache document: only what a lookup returns is converted; the log
 * arrays are not even fetched (the find projects them out).
 */

ngx_int_t
ngx_http_bytemark_entry_from_bson(const void *doc,
    ngx_http_bytemark_answer_t *a, char *err, size_t size)
{
    const char   *key;
    bson_iter_t   it;

    if (!bson_iter_init(&it, doc)) {
        snprintf(err, size, "cache document is not valid BSON");
        return NGX_ERROR;
    }

    while (bson_iter_next(&it)) {
        key = bson_iter_key(&it);

        if (strcmp(key, "passes") == 0) {
            if (ngx_http_bytemark_passes_from_bson(&it, &a->passes, err, size)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (strcmp(key, "passes4") == 0) {
            if (ngx_http_bytemark_passes_from_bson(&it, &a->passes4, err, size)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (strcmp(key, "timestamp") == 0) {
            if (!BSON_ITER_HOLDS_NUMBER(&it)) {
                snprintf(err, size, "cache document \"timestamp\" is not "
                         "a number");
                return NGX_ERROR;
            }

            /*
             * NaN, infinities, 1e300: no int64 holds them, and casting them
             * (as bson_iter_as_int64() does) is undefined
             */
            if (BSON_ITER_HOLDS_DOUBLE(&it)
                && !(bson_iter_double(&it) >= -9223372036854775808.0
                     && bson_iter_double(&it) < 9223372036854775808.0))
            {
                snprintf(err, size, "cache document \"timestamp\" is out "
                         "of range");
                return NGX_ERROR;
            }

            a->timestamp = bson_iter_as_int64(&it);
            a->has_timestamp = 1;

        } else if (strcmp(key, "bytemark_incomplete") == 0) {
            a->incomplete = bson_iter_as_bool(&it);
        }
    }

    if (a->passes == NULL) {
        a->passes = json_array();
    }

    if (a->passes4 == NULL) {
        a->passes4 = json_array();
    }

    if (a->passes == NULL || a->passes4 == NULL) {
        snprintf(err, size, "out of memory");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_passes_from_bson(bson_iter_t *it, json_t **out, char *err,
    size_t size)
{
    size_t   i;
    json_t  *arr;

    if (!BSON_ITER_HOLDS_ARRAY(it)) {
        snprintf(err, size, "cache document \"%s\" is not an array",
                 bson_iter_key(it));
        return NGX_ERROR;
    }

    arr = ngx_http_bytemark_bson_to_json(it, 0);
    if (arr == NULL) {
        snprintf(err, size, "cache document \"%s\" cannot be rendered "
                 "(invalid UTF-8 or nested deeper than %d)",
                 bson_iter_key(it), NGX_HTTP_BYTEMARK_MAX_DEPTH);
        return NGX_ERROR;
    }

    for (i = 0; i < json_array_size(arr); i++) {
        if (!json_is_object(json_array_get(arr, i))) {
            snprintf(err, size, "cache document \"%s\" holds a pass that "
                     "is not an object", bson_iter_key(it));
            json_decref(arr);
            return NGX_ERROR;
        }
    }

    if (*out) {
        /* a duplicate key: the last one wins, as in a JavaScript client */
        json_decref(*out);
    }

    *out = arr;

    return NGX_OK;
}


/*
 * Numbers as JavaScript has them: a real that holds an integer (2.0, -0.0)
 * becomes that integer, in place.  Payloads from MySQL and from ingest
 * bodies go through this, and BSON doubles are read the same way, so the
 * same pass renders (and hashes) the same from every source.
 */

json_t *
ngx_http_bytemark_json_normalize(json_t *v)
{
    size_t   i;
    void    *it;
    json_t  *child, *n;
    double   d;

    switch (json_typeof(v)) {

    case JSON_REAL:
        d = json_real_value(v);

        if (d <= 9007199254740992.0 && d >= -9007199254740992.0
            && d == (double) (int64_t) d)
        {
            n = json_integer((json_int_t) d);
            if (n) {
                json_decref(v);
                return n;
            }
        }

        return v;

    case JSON_ARRAY:
        for (i = 0; i < json_array_size(v); i++) {
            child = json_array_get(v, i);
            n = ngx_http_bytemark_json_normalize(json_incref(child));

            if (json_array_set_new(v, i, n) != 0) {
                break;
            }
        }

        return v;

    case JSON_OBJECT:
        for (it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            child = json_object_iter_value(it);
            n = ngx_http_bytemark_json_normalize(json_incref(child));

            if (json_object_iter_set_new(v, it, n) != 0) {
                break;
            }
        }

        return v;

    default:
        return v;
    }
}


/* a new reference: the array itself when nothing is filtered out */

json_t *
ngx_http_bytemark_filter_passes(json_t *passes, ngx_http_bytemark_filter_t *f)
{
    size_t       i, len;
    json_t      *out, *pass, *status;
    ngx_str_t   *s;
    ngx_uint_t   k;

    if (f->statuses == NULL) {
        return json_incref(passes);
    }

    out = json_array();
    if (out == NULL) {
        return NULL;
    }

    s = f->statuses->elts;

    json_array_foreach(passes, i, pass) {
        status = json_object_get(pass, "status");

        if (!json_is_string(status)) {
            continue;
        }

        len = json_string_length(status);

        for (k = 0; k < f->statuses->nelts; k++) {
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


/* a borrowed reference to the pass, searched in passes then passes4 */

json_t *
ngx_http_bytemark_find_pass(ngx_http_bytemark_answer_t *a, u_char *uuid,
    ngx_uint_t *version)
{
    size_t       i;
    json_t      *arrays[2], *pass, *id;
    ngx_uint_t   k;

    arrays[0] = a->passes;
    arrays[1] = a->passes4;

    for (k = 0; k < 2; k++) {
        if (arrays[k] == NULL) {
            continue;
        }

        json_array_foreach(arrays[k], i, pass) {
            id = json_object_get(pass, "pass_uuid");

            if (json_is_string(id)
                && json_string_length(id) == NGX_HTTP_BYTEMARK_UUID_LEN
                && ngx_strncasecmp((u_char *) json_string_value(id), uuid,
                                   NGX_HTTP_BYTEMARK_UUID_LEN) == 0)
            {
                if (version) {
                    *version = (k == 0) ? 3 : 4;
                }

                return pass;
            }
        }
    }

    return NULL;
}


/* wall-clock ms; safe in threads, unlike nginx's cached time */

int64_t
ngx_http_bytemark_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* the reverse, for cache writes: append value v as key to document doc */

ngx_int_t
ngx_http_bytemark_json_to_bson(void *doc, const char *key, json_t *v,
    ngx_uint_t depth)
{
    bson_t      *parent = doc;
    bson_t       child;
    char         idx[24];
    size_t       i;
    json_t      *elt;
    json_int_t   n;
    const char  *k, *ikey;
    ngx_int_t    rc;

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH) {
        return NGX_ERROR;
    }

    switch (json_typeof(v)) {

    case JSON_OBJECT:
        if (!bson_append_document_begin(parent, key, -1, &child)) {
            return NGX_ERROR;
        }

        json_object_foreach(v, k, elt) {
            if (ngx_http_bytemark_json_to_bson(&child, k, elt, depth + 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        return bson_append_document_end(parent, &child) ? NGX_OK : NGX_ERROR;

    case JSON_ARRAY:
        if (!bson_append_array_begin(parent, key, -1, &child)) {
            return NGX_ERROR;
        }

        json_array_foreach(v, i, elt) {
            bson_uint32_to_string((uint32_t) i, &ikey, idx, sizeof(idx));

            rc = ngx_http_bytemark_json_to_bson(&child, ikey, elt, depth + 1);
            if (rc != NGX_OK) {
                return NGX_ERROR;
            }
        }

        return bson_append_array_end(parent, &child) ? NGX_OK : NGX_ERROR;

    case JSON_STRING:
        return bson_append_utf8(parent, key, -1, json_string_value(v),
                                (int) json_string_length(v))
               ? NGX_OK : NGX_ERROR;

    case JSON_INTEGER:
        n = json_integer_value(v);

        if (n >= INT32_MIN && n <= INT32_MAX) {
            return bson_append_int32(parent, key, -1, (int32_t) n)
                   ? NGX_OK : NGX_ERROR;
        }

        return bson_append_int64(parent, key, -1, n) ? NGX_OK : NGX_ERROR;

    case JSON_REAL:
        return bson_append_double(parent, key, -1, json_real_value(v))
               ? NGX_OK : NGX_ERROR;

    case JSON_TRUE:
    case JSON_FALSE:
        return bson_append_bool(parent, key, -1, json_is_true(v))
               ? NGX_OK : NGX_ERROR;

    default:
        return bson_append_null(parent, key, -1) ? NGX_OK : NGX_ERROR;
    }
}
