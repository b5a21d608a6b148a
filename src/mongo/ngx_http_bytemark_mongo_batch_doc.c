
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A batch's find and what its documents give its lookups (mongo_batch.c):
 * the filter, the user a document belongs to, and a copy of one decoded
 * answer for each lookup of that user.  Runs in the task's thread.
 */


#include "ngx_http_bytemark_mongo_private.h"


static ngx_int_t ngx_http_bytemark_passes_copy(ngx_http_bytemark_passes_t *dst,
    ngx_http_bytemark_passes_t *src);


/*
 * The find of lookups sorted by user: the findOne of a lone user, or one
 * $in of their users.  MongoDB compares numbers across types: int64 finds
 * int32 and double.  Returns the find's options.
 */

const bson_t *
ngx_http_bytemark_mongo_batch_filter(ngx_http_bytemark_mongo_t *mongo,
    ngx_http_bytemark_call_t **m, ngx_uint_t n, bson_t *filter)
{
    char         key[16];
    bson_t       cond, in;
    const char  *k;
    ngx_uint_t   i, keys;

    bson_init(filter);

    if (m[0]->user_id == m[n - 1]->user_id) {
        BSON_APPEND_INT64(filter, "user_id", (int64_t) m[0]->user_id);
        return mongo->find_opts;
    }

    BSON_APPEND_DOCUMENT_BEGIN(filter, "user_id", &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);

    for (i = 0, keys = 0; i < n; i++) {
        if (i > 0 && m[i]->user_id == m[i - 1]->user_id) {
            continue;
        }

        bson_uint32_to_string((uint32_t) keys++, &k, key, sizeof(key));
        BSON_APPEND_INT64(&in, k, (int64_t) m[i]->user_id);
    }

    bson_append_array_end(&cond, &in);
    bson_append_document_end(filter, &cond);

    return mongo->batch_opts;
}


/* the user a document belongs to: an integral number (SPEC 2) */

ngx_int_t
ngx_http_bytemark_mongo_doc_user(const bson_t *doc, uint64_t *id)
{
    double       d;
    int64_t      v;
    bson_iter_t  it;

    if (!bson_iter_init_find(&it, doc, "user_id")) {
        return NGX_ERROR;
    }

    switch (bson_iter_type(&it)) {

    case BSON_TYPE_INT32:
        v = bson_iter_int32(&it);
        break;

    case BSON_TYPE_INT64:
        v = bson_iter_int64(&it);
        break;

    case BSON_TYPE_DOUBLE:
        d = bson_iter_double(&it);

        /* the ids asked for are below 2^53: anything else is not ours */
        if (!(d >= 1 && d <= 9007199254740991.0)) {
            return NGX_ERROR;
        }

        v = (int64_t) d;

        if ((double) v != d) {
            return NGX_ERROR;
        }

        break;

    default:
        return NGX_ERROR;
    }

    if (v < 1) {
        return NGX_ERROR;
    }

    *id = (uint64_t) v;

    return NGX_OK;
}


/* thread: a deep copy, so that each request frees its own */

ngx_int_t
ngx_http_bytemark_mongo_answer_copy(ngx_http_bytemark_answer_t *dst,
    ngx_http_bytemark_answer_t *src)
{
    *dst = *src;
    ngx_memzero(dst->passes, sizeof(dst->passes));

    if (ngx_http_bytemark_passes_copy(&dst->passes[0], &src->passes[0])
        != NGX_OK
        || ngx_http_bytemark_passes_copy(&dst->passes[1], &src->passes[1])
           != NGX_OK)
    {
        ngx_http_bytemark_answer_release(dst);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_passes_copy(ngx_http_bytemark_passes_t *dst,
    ngx_http_bytemark_passes_t *src)
{
    if (src->text.data) {
        dst->text.data = malloc(src->text.size);
        if (dst->text.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(dst->text.data, src->text.data, src->text.len);
        dst->text.len = src->text.len;
        dst->text.size = src->text.size;
    }

    if (src->items && src->n) {
        dst->items = malloc(src->n * sizeof(ngx_http_bytemark_item_t));
        if (dst->items == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(dst->items, src->items,
                   src->n * sizeof(ngx_http_bytemark_item_t));
        dst->nalloc = src->n;
    }

    dst->n = src->n;

    return NGX_OK;
}
