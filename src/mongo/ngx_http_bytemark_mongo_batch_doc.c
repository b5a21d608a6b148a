
/*
 * What a batch's documents give its lookups (mongo_batch.c): the user a
 * document belongs to, and a copy of one decoded answer for each lookup of
 * that user.  Runs in the task's thread.
 */


#include "ngx_http_bytemark_mongo_private.h"


static ngx_int_t ngx_http_bytemark_passes_copy(ngx_http_bytemark_passes_t *dst,
    ngx_http_bytemark_passes_t *src);


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
