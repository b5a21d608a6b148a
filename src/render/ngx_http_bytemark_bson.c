
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * BSON to canonical JSON: one value of a cache document (render_bson) and
 * the pass arrays of an entry (render_passes), written straight from the
 * BSON in the pool thread.  Members are sorted the way jansson sorts keys
 * (JSON_SORT_KEYS), the last of duplicate keys kept; what filters look at
 * (uuid, status) is noted on the way.  The writer itself is render.c.
 */


#include "ngx_http_bytemark_render.h"

#include <bson/bson.h>


/* members sorted on the stack; larger documents sort on the heap */
#define NGX_HTTP_BYTEMARK_MEMBERS      16


typedef struct {
    const char                   *key;
    size_t                        len;
    ngx_uint_t                    pos;        /* in the document */
    bson_iter_t                   it;
} ngx_http_bytemark_member_t;


static ngx_int_t ngx_http_bytemark_render_document(
    ngx_http_bytemark_jbuf_t *b, const bson_iter_t *it, ngx_uint_t depth,
    ngx_http_bytemark_item_t *item);
static ngx_int_t ngx_http_bytemark_render_members(
    ngx_http_bytemark_jbuf_t *b, ngx_http_bytemark_member_t *m,
    ngx_uint_t n, ngx_uint_t depth, ngx_http_bytemark_item_t *item);
static void ngx_http_bytemark_item_note(ngx_http_bytemark_item_t *item,
    const char *key, size_t klen, const u_char *v, size_t len);
static ngx_int_t ngx_http_bytemark_render_array(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth);
static void ngx_http_bytemark_sort_members(ngx_http_bytemark_member_t *m,
    ngx_uint_t n);
static ngx_int_t ngx_http_bytemark_render_decimal(
    ngx_http_bytemark_jbuf_t *b, const bson_iter_t *it);
static ngx_int_t ngx_http_bytemark_render_timestamp(
    ngx_http_bytemark_jbuf_t *b, const bson_iter_t *it);
static ngx_int_t ngx_http_bytemark_render_binary(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it);
static ngx_int_t ngx_http_bytemark_render_regex(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it);
static int ngx_http_bytemark_member_cmp(const void *one, const void *two);
static ngx_int_t ngx_http_bytemark_key_cmp(ngx_http_bytemark_member_t *a,
    ngx_http_bytemark_member_t *b);


/* one BSON value, as bson_to_json() in fuzz/reference.c would convert it */

ngx_int_t
ngx_http_bytemark_render_bson(ngx_http_bytemark_jbuf_t *b, const void *iter,
    ngx_uint_t depth)
{
    const bson_iter_t  *it = iter;

    char                oid[25], iso[NGX_HTTP_BYTEMARK_ISO_LEN];
    uint32_t            len;
    const char         *s;

    switch (bson_iter_type(it)) {

    case BSON_TYPE_DOUBLE:
        return ngx_http_bytemark_render_double(b, bson_iter_double(it));

    case BSON_TYPE_INT32:
        return ngx_http_bytemark_render_int(b, bson_iter_int32(it));

    case BSON_TYPE_INT64:
        return ngx_http_bytemark_render_int(b, bson_iter_int64(it));

    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        break;

    case BSON_TYPE_CODE:
        s = bson_iter_code(it, &len);
        break;

    case BSON_TYPE_SYMBOL:
        s = bson_iter_symbol(it, &len);
        break;

    case BSON_TYPE_DOCUMENT:
        return ngx_http_bytemark_render_document(b, it, depth + 1, NULL);

    case BSON_TYPE_ARRAY:
        return ngx_http_bytemark_render_array(b, it, depth + 1);

    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), oid);
        return ngx_http_bytemark_render_string(b, (u_char *) oid, 24);

    case BSON_TYPE_DATE_TIME:
        ngx_http_bytemark_iso_time(bson_iter_date_time(it), iso);
        return ngx_http_bytemark_render_string(b, (u_char *) iso,
                                               ngx_strlen(iso));

    case BSON_TYPE_BOOL:
        return bson_iter_bool(it) ? ngx_http_bytemark_jbuf_add(b, "true", 4)
                                  : ngx_http_bytemark_jbuf_add(b, "false", 5);

    case BSON_TYPE_DECIMAL128:
        return ngx_http_bytemark_render_decimal(b, it);

    case BSON_TYPE_TIMESTAMP:
        return ngx_http_bytemark_render_timestamp(b, it);

    case BSON_TYPE_BINARY:
        return ngx_http_bytemark_render_binary(b, it);

    case BSON_TYPE_REGEX:
        return ngx_http_bytemark_render_regex(b, it);

    default:
        /* null, undefined, minkey, maxkey, dbpointer, code with scope */
        return ngx_http_bytemark_jbuf_add(b, "null", 4);
    }

    /* the string types */

    if (s == NULL) {
        return NGX_DECLINED;
    }

    return ngx_http_bytemark_render_string(b, (u_char *) s, len);
}


static ngx_int_t
ngx_http_bytemark_render_decimal(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it)
{
    char               decstr[BSON_DECIMAL128_STRING];
    bson_decimal128_t  dec;

    if (!bson_iter_decimal128(it, &dec)) {
        return NGX_DECLINED;
    }

    bson_decimal128_to_string(&dec, decstr);
    return ngx_http_bytemark_render_string(b, (u_char *) decstr,
                                           ngx_strlen(decstr));
}


/* {"t": ..., "i": ...}, keys sorted */

static ngx_int_t
ngx_http_bytemark_render_timestamp(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it)
{
    uint32_t  ts, inc;

    bson_iter_timestamp(it, &ts, &inc);

    if (ngx_http_bytemark_jbuf_reserve(b, 2 * NGX_INT64_LEN + 16) != NGX_OK) {
        return NGX_ERROR;
    }

    b->len = ngx_sprintf(b->data + b->len, "{\"i\":%uD,\"t\":%uD}", inc, ts)
             - b->data;
    return NGX_OK;
}


/* base64 in a string */

static ngx_int_t
ngx_http_bytemark_render_binary(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it)
{
    uint32_t         len;
    ngx_str_t        src, dst;
    const uint8_t   *bin;
    bson_subtype_t   subtype;

    bson_iter_binary(it, &subtype, &len, &bin);

    src.data = (u_char *) bin;
    src.len = bin ? len : 0;

    if (ngx_http_bytemark_jbuf_reserve(b,
            ngx_base64_encoded_length(src.len) + 2)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    b->data[b->len++] = '"';
    dst.data = b->data + b->len;
    ngx_encode_base64(&dst, &src);
    b->len += dst.len;
    b->data[b->len++] = '"';
    return NGX_OK;
}


/* {"$regex": ..., "$options": ...}, keys sorted */

static ngx_int_t
ngx_http_bytemark_render_regex(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it)
{
    ngx_int_t    rc;
    const char  *s, *opts;

    s = bson_iter_regex(it, &opts);

    if (s == NULL || opts == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_bytemark_jbuf_add(b, "{\"$options\":", 12) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_bytemark_render_string(b, (u_char *) opts, ngx_strlen(opts));
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_bytemark_jbuf_add(b, ",\"$regex\":", 10) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_bytemark_render_string(b, (u_char *) s, ngx_strlen(s));
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_bytemark_jbuf_char(b, '}');
}


/*
 * A document with its keys sorted.  With item, a pass object: its
 * "status" and "pass_uuid" are noted for filters and pass lookups.
 */

static ngx_int_t
ngx_http_bytemark_render_document(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth, ngx_http_bytemark_item_t *item)
{
    ngx_int_t                    rc;
    ngx_uint_t                   n, size;
    bson_iter_t                  child;
    ngx_http_bytemark_member_t  *m, *heap, stack[NGX_HTTP_BYTEMARK_MEMBERS];

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH || !bson_iter_recurse(it, &child))
    {
        return NGX_DECLINED;
    }

    m = stack;
    heap = NULL;
    size = NGX_HTTP_BYTEMARK_MEMBERS;
    n = 0;

    while (bson_iter_next(&child)) {

        if (n == size) {
            size *= 2;
            m = realloc(heap, size * sizeof(ngx_http_bytemark_member_t));
            if (m == NULL) {
                free(heap);
                return NGX_ERROR;
            }

            if (heap == NULL) {
                ngx_memcpy(m, stack, sizeof(stack));
            }

            heap = m;
        }

        m[n].key = bson_iter_key(&child);
        m[n].len = bson_iter_key_len(&child);
        m[n].pos = n;
        m[n].it = child;
        n++;
    }

    ngx_http_bytemark_sort_members(m, n);

    rc = ngx_http_bytemark_render_members(b, m, n, depth, item);

    free(heap);

    return rc;
}


static ngx_int_t
ngx_http_bytemark_render_members(ngx_http_bytemark_jbuf_t *b,
    ngx_http_bytemark_member_t *m, ngx_uint_t n, ngx_uint_t depth,
    ngx_http_bytemark_item_t *item)
{
    size_t      mark, value;
    ngx_int_t   rc;
    ngx_uint_t  i, first;

    if (ngx_http_bytemark_jbuf_char(b, '{') != NGX_OK) {
        return NGX_ERROR;
    }

    first = 1;

    for (i = 0; i < n; i++) {
        mark = b->len;

        if (!first && ngx_http_bytemark_jbuf_char(b, ',') != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_string(b, (u_char *) m[i].key,
                                             m[i].len);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_http_bytemark_jbuf_char(b, ':') != NGX_OK) {
            return NGX_ERROR;
        }

        value = b->len;

        rc = ngx_http_bytemark_render_bson(b, &m[i].it, depth);
        if (rc != NGX_OK) {
            return rc;
        }

        if (i + 1 < n && ngx_http_bytemark_key_cmp(&m[i], &m[i + 1]) == 0) {
            /*
             * a duplicate key: the last one wins, as in a JavaScript
             * client; the earlier value was still checked
             */
            b->len = mark;
            continue;
        }

        first = 0;

        if (item) {
            ngx_http_bytemark_item_note(item, m[i].key, m[i].len,
                                        b->data + value, b->len - value);
        }
    }

    return ngx_http_bytemark_jbuf_char(b, '}');
}


/*
 * A pass's "status" and "pass_uuid", from their rendered value: whatever
 * BSON type became a JSON string (a symbol, a date...) is a string to a
 * filter too.  The escapes the writer uses are undone.
 */

static void
ngx_http_bytemark_item_note(ngx_http_bytemark_item_t *item, const char *key,
    size_t klen, const u_char *v, size_t len)
{
    u_char       c, buf[NGX_HTTP_BYTEMARK_UUID_LEN];
    size_t       n, max;
    ngx_uint_t   status;

    if (klen == 6 && ngx_strncmp(key, "status", 6) == 0) {
        status = 1;
        max = NGX_HTTP_BYTEMARK_STATUS_MAX;

    } else if (klen == 9 && ngx_strncmp(key, "pass_uuid", 9) == 0) {
        status = 0;
        max = NGX_HTTP_BYTEMARK_UUID_LEN;

    } else {
        return;
    }

    if (len < 2 || v[0] != '"') {
        return;
    }

    v++;
    len -= 2;
    n = 0;

    while (len) {
        if (n == max) {
            return;
        }

        c = *v++;
        len--;

        if (c == '\\') {
            c = *v++;
            len--;

            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                /* \u00XX: the writer escapes nothing else this way */
                c = (u_char) (ngx_hextoi((u_char *) v + 2, 2));
                v += 4;
                len -= 4;
                break;
            default:
                /* '"' and '\\' stand for themselves */
                break;
            }
        }

        buf[n++] = c;
    }

    if (status) {
        ngx_memcpy(item->status, buf, n);
        item->status_len = (uint8_t) n;
        item->has_status = 1;

    } else if (n == NGX_HTTP_BYTEMARK_UUID_LEN) {
        ngx_memcpy(item->uuid, buf, n);
        item->has_uuid = 1;
    }
}


static ngx_int_t
ngx_http_bytemark_render_array(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth)
{
    ngx_int_t    rc;
    ngx_uint_t   first;
    bson_iter_t  child;

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH || !bson_iter_recurse(it, &child))
    {
        return NGX_DECLINED;
    }

    if (ngx_http_bytemark_jbuf_char(b, '[') != NGX_OK) {
        return NGX_ERROR;
    }

    first = 1;

    while (bson_iter_next(&child)) {
        if (!first && ngx_http_bytemark_jbuf_char(b, ',') != NGX_OK) {
            return NGX_ERROR;
        }

        first = 0;

        rc = ngx_http_bytemark_render_bson(b, &child, depth);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return ngx_http_bytemark_jbuf_char(b, ']');
}


/*
 * Stable: equal keys keep their document order, so the last of them is the
 * one kept.  Pass objects have a handful of keys: insertion sort; a large
 * object (a payload with keys in reverse order, say) must not cost n^2.
 */

static void
ngx_http_bytemark_sort_members(ngx_http_bytemark_member_t *m, ngx_uint_t n)
{
    ngx_uint_t                  i, j;
    ngx_http_bytemark_member_t  t;

    if (n > NGX_HTTP_BYTEMARK_MEMBERS) {
        qsort(m, n, sizeof(ngx_http_bytemark_member_t),
              ngx_http_bytemark_member_cmp);
        return;
    }

    for (i = 1; i < n; i++) {
        if (ngx_http_bytemark_key_cmp(&m[i - 1], &m[i]) <= 0) {
            continue;
        }

        t = m[i];

        for (j = i; j > 0 && ngx_http_bytemark_key_cmp(&m[j - 1], &t) > 0;
             j--)
        {
            m[j] = m[j - 1];
        }

        m[j] = t;
    }
}


/* qsort() is not stable: the position breaks ties */

static int
ngx_http_bytemark_member_cmp(const void *one, const void *two)
{
    ngx_int_t                    rc;
    ngx_http_bytemark_member_t  *a, *b;

    a = (ngx_http_bytemark_member_t *) one;
    b = (ngx_http_bytemark_member_t *) two;

    rc = ngx_http_bytemark_key_cmp(a, b);

    if (rc != 0) {
        return (int) rc;
    }

    return (a->pos > b->pos) - (a->pos < b->pos);
}


/* jansson's order: bytes, then length */

static ngx_int_t
ngx_http_bytemark_key_cmp(ngx_http_bytemark_member_t *a,
    ngx_http_bytemark_member_t *b)
{
    int  rc;

    rc = ngx_memcmp(a->key, b->key, ngx_min(a->len, b->len));

    if (rc != 0) {
        return rc;
    }

    return (a->len > b->len) - (a->len < b->len);
}


/*
 * A pass array of a cache document: each element must be an object; each
 * is rendered and becomes an item of the list.
 */

ngx_int_t
ngx_http_bytemark_render_passes(ngx_http_bytemark_passes_t *list,
    const void *iter)
{
    ngx_int_t                  rc;
    bson_iter_t                child;
    ngx_http_bytemark_item_t  *item;

    if (!bson_iter_recurse(iter, &child)) {
        return NGX_DECLINED;
    }

    while (bson_iter_next(&child)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&child)) {
            return NGX_ABORT;
        }

        item = ngx_http_bytemark_passes_begin(list);
        if (item == NULL) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_document(&list->text, &child, 2, item);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_http_bytemark_passes_end(list, item);
    }

    return ngx_http_bytemark_passes_close(list);
}
