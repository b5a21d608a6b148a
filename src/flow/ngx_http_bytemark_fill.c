
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The cache writes a read leaves behind, off the response's path: the fill
 * of the entry from a MySQL answer, and the deletion of a noted user's
 * entry (the repair, after an ingest whose cache update failed).  Both are
 * calls without a request; the resolution order is ngx_http_bytemark_lookup.c.
 */


#include "ngx_http_bytemark_flow.h"


static void ngx_http_bytemark_repair_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);


/*
 * Whether a MySQL answer will be written to the cache: asked before the
 * read too, which then keeps the rows for it (answer->keep_rows).  A
 * MongoDB that just failed would only hold a thread for nothing; a noted
 * entry is being deleted instead.
 */

ngx_uint_t
ngx_http_bytemark_fill_wanted(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_http_bytemark_get_backend(r);
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    return bmcf->mongo != NULL && blcf->cache_fill && !ctx->mongo_failed
           && !ctx->noted;
}


/*
 * Rewrite the cache entry from the MySQL answer's rows, which move to the
 * call; its thread makes them BSON.  The call is posted with no request:
 * the response is already on its way, and the call frees itself when the
 * thread is done.
 */

void
ngx_http_bytemark_fill(ngx_http_request_t *r, ngx_http_bytemark_ctx_t *ctx,
    ngx_http_bytemark_answer_t *a)
{
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_call_fill_t  *fill;
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_http_bytemark_get_backend(r);
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (!a->keep_rows || !ngx_http_bytemark_fill_wanted(r, ctx)
        || ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                       NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN)
           != NGX_OK)
    {
        return;
    }

    call = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_FILL,
                                         "mongo cache fill",
                                         ngx_http_bytemark_mongo_fill,
                                         NULL, blcf->mongo_timeout);
    if (call == NULL) {
        return;
    }

    call->bmcf = bmcf;
    call->user_id = ctx->user_id;

    fill = ngx_http_bytemark_call_fill(call);
    fill->timestamp = a->timestamp;
    fill->rows[0] = a->rows[0];
    fill->rows[1] = a->rows[1];
    ngx_memzero(a->rows, sizeof(a->rows));

    (void) ngx_http_bytemark_call_start(call, NGX_LOG_WARN);
}


/* delete a noted user's entry; the note goes once that has worked */

void
ngx_http_bytemark_repair(ngx_http_request_t *r, ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    bmcf = ngx_http_bytemark_get_backend(r);

    if (ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                    NGX_HTTP_BYTEMARK_GATE_STUCK)
        != NGX_OK)
    {
        /* the note stays: a later lookup tries again */
        return;
    }

    call = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_DELETE,
                                         "mongo delete of a noted entry",
                                         ngx_http_bytemark_mongo_purge,
                                         ngx_http_bytemark_repair_done,
                                         blcf->mongo_timeout);
    if (call == NULL) {
        return;
    }

    call->bmcf = bmcf;
    call->user_id = ctx->user_id;
    ngx_http_bytemark_call_delete(call)->stamp = ctx->note_stamp;
    call->always_done = 1;

    (void) ngx_http_bytemark_call_start(call, 0);
}


static void
ngx_http_bytemark_repair_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    if (o->result != NGX_HTTP_BYTEMARK_FOUND) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: %s for user %uL failed, will retry: %s",
                      call->name, call->user_id, o->error);
        return;
    }

    ngx_http_bytemark_note_clear(call->bmcf, call->user_id,
                                 ngx_http_bytemark_call_delete(call)->stamp);
}
