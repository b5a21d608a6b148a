
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Pass arrays: a cache document or MySQL rows become the rendered arrays a
 * lookup answers with (render.c writes the text); status filters and pass
 * lookups pick items of them.  And jansson values to BSON, for writes.
 */


#include "ngx_http_bytemark_render.h"

#include <bson/bson.h>




static ngx_int_t ngx_http_bytemark_passes_from_bson(bson_iter_t *it,
    ngx_http_bytemark_passes_t *out, char *err, size_t size);


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
            if (ngx_http_bytemark_passes_from_bson(&it, &a->passes[0], err,
                                                   size)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (strcmp(key, "passes4") == 0) {
            if (ngx_http_bytemark_passes_from_bson(&it, &a->passes[1], err,
                                                   size)
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

    /*
     * Without its write time an entry can be neither fresh nor stale
     * (SPEC 3.1: a miss, which the fill replaces), even with ttl 0.
     */
    if (!a->has_timestamp) {
        snprintf(err, size, "cache document has no \"timestamp\"");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_passes_from_bson(bson_iter_t *it,
    ngx_http_bytemark_passes_t *out, char *err, size_t size)
{
    ngx_int_t                   rc;
    ngx_http_bytemark_passes_t  list;

    if (!BSON_ITER_HOLDS_ARRAY(it)) {
        snprintf(err, size, "cache document \"%s\" is not an array",
                 bson_iter_key(it));
        return NGX_ERROR;
    }

    ngx_memzero(&list, sizeof(ngx_http_bytemark_passes_t));

    rc = ngx_http_bytemark_render_passes(&list, it);

    switch (rc) {

    case NGX_OK:
        /* a duplicate key: the last one wins, as in a JavaScript client */
        ngx_http_bytemark_passes_free(out);
        *out = list;
        return NGX_OK;

    case NGX_ABORT:
        snprintf(err, size, "cache document \"%s\" holds a pass that "
                 "is not an object", bson_iter_key(it));
        break;

    case NGX_DECLINED:
        snprintf(err, size, "cache document \"%s\" cannot be rendered "
                 "(invalid UTF-8 or nested deeper than 64)",
                 bson_iter_key(it));
        break;

    default:
        snprintf(err, size, "out of memory");
    }

    ngx_http_bytemark_passes_free(&list);

    return NGX_ERROR;
}


/*
 * A MySQL row becomes {free_ticket_status, pass_uuid, payload,
 * payload_hash, status, timestamp}, keys sorted (SPEC 2).  A payload that
 * is neither JSON nor UTF-8 text has no JSON form and is left out.
 */

ngx_int_t
ngx_http_bytemark_passes_add_row(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_pass_row_t *row)
{
    size_t                     mark;
    ngx_int_t                  rc;
    ngx_http_bytemark_jbuf_t  *b;
    ngx_http_bytemark_item_t  *item;

    item = ngx_http_bytemark_passes_begin(list);
    if (item == NULL) {
        return NGX_ERROR;
    }

    b = &list->text;

    if (ngx_http_bytemark_jbuf_add(b, "{\"free_ticket_status\":", 22)
        != NGX_OK
        || ngx_http_bytemark_render_int(b, row->free_ticket_status) != NGX_OK
        || ngx_http_bytemark_jbuf_add(b, ",\"pass_uuid\":", 13) != NGX_OK
        || ngx_http_bytemark_render_string(b, row->uuid.data, row->uuid.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    mark = b->len;

    if (ngx_http_bytemark_jbuf_add(b, ",\"payload\":", 11) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = (row->payload.data == NULL)
         ? ngx_http_bytemark_jbuf_add(b, "null", 4)
         : ngx_http_bytemark_render_payload(b, row->payload.data,
                                            row->payload.len);

    if (rc == NGX_DECLINED) {
        b->len = mark;

    } else if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    mark = b->len;

    if (ngx_http_bytemark_jbuf_add(b, ",\"payload_hash\":", 16) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = (row->hash.data == NULL)
         ? ngx_http_bytemark_jbuf_add(b, "null", 4)
         : ngx_http_bytemark_render_string(b, row->hash.data, row->hash.len);

    if (rc == NGX_DECLINED) {
        b->len = mark;

    } else if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_jbuf_add(b, ",\"status\":", 10) != NGX_OK
        || ngx_http_bytemark_render_string(b, row->status.data,
                                           row->status.len)
           != NGX_OK
        || ngx_http_bytemark_jbuf_add(b, ",\"timestamp\":", 13) != NGX_OK
        || ngx_http_bytemark_render_int(b, row->timestamp) != NGX_OK
        || ngx_http_bytemark_jbuf_add(b, "}", 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (row->status.len <= NGX_HTTP_BYTEMARK_STATUS_MAX) {
        ngx_memcpy(item->status, row->status.data, row->status.len);
        item->status_len = (uint8_t) row->status.len;
        item->has_status = 1;
    }

    if (row->uuid.len == NGX_HTTP_BYTEMARK_UUID_LEN) {
        ngx_memcpy(item->uuid, row->uuid.data, NGX_HTTP_BYTEMARK_UUID_LEN);
        item->has_uuid = 1;
    }

    ngx_http_bytemark_passes_end(list, item);

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


/*
 * The array's text, filtered by status: the rendered text itself when
 * nothing is filtered, else the chosen passes copied into the pool.
 */

ngx_int_t
ngx_http_bytemark_filter_passes(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_filter_t *f, ngx_pool_t *pool, ngx_str_t *text)
{
    u_char                    *p;
    ngx_str_t                 *s;
    ngx_uint_t                 i, k, first;
    ngx_http_bytemark_item_t  *item;

    ngx_http_bytemark_passes_text(list, text);

    if (f->statuses == NULL || list == NULL || list->n == 0) {
        return NGX_OK;
    }

    /* the filtered text is never longer than the whole */
    p = ngx_pnalloc(pool, text->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    text->data = p;
    *p++ = '[';
    first = 1;
    s = f->statuses->elts;

    for (i = 0; i < list->n; i++) {
        item = &list->items[i];

        if (!item->has_status) {
            continue;
        }

        for (k = 0; k < f->statuses->nelts; k++) {
            if (s[k].len == item->status_len
                && ngx_memcmp(s[k].data, item->status, s[k].len) == 0)
            {
                break;
            }
        }

        if (k == f->statuses->nelts) {
            continue;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;
        p = ngx_cpymem(p, list->text.data + item->start, item->len);
    }

    *p++ = ']';
    text->len = p - text->data;

    return NGX_OK;
}


/* the pass, searched in passes then passes4 */

ngx_http_bytemark_item_t *
ngx_http_bytemark_find_pass(ngx_http_bytemark_answer_t *a, u_char *uuid,
    ngx_uint_t *version)
{
    ngx_uint_t                 i, k;
    ngx_http_bytemark_item_t  *item;

    for (k = 0; k < 2; k++) {
        for (i = 0; i < a->passes[k].n; i++) {
            item = &a->passes[k].items[i];

            if (item->has_uuid
                && ngx_strncasecmp(item->uuid, uuid,
                                   NGX_HTTP_BYTEMARK_UUID_LEN) == 0)
            {
                if (version) {
                    *version = (k == 0) ? 3 : 4;
                }

                return item;
            }
        }
    }

    return NULL;
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
