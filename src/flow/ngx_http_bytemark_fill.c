
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
 * Rewrite the cache entry from the MySQL answer.  The call is posted with
 * no request: the response is already on its way, and the call frees
 * itself when the thread is done.
 */

void
ngx_http_bytemark_fill(ngx_http_request_t *r, ngx_http_bytemark_ctx_t *ctx,
    ngx_http_bytemark_answer_t *a)
{
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_http_bytemark_get_backend(r);
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    /*
     * A MongoDB that just failed would only hold a thread for nothing; a
     * noted entry is being deleted instead.
     */
    if (bmcf->mongo == NULL || !blcf->cache_fill || ctx->mongo_failed
        || ctx->noted
        || ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                       NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN)
           != NGX_OK)
    {
        return;
    }

    call = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         "mongo cache fill",
                                         ngx_http_bytemark_mongo_fill,
                                         NULL, blcf->mongo_timeout);
    if (call == NULL) {
        return;
    }

    call->bmcf = bmcf;
    call->user_id = ctx->user_id;
    call->fill_timestamp = a->timestamp;
    /* the rendered arrays move to the call */
    call->fill_passes[0] = a->passes[0];
    call->fill_passes[1] = a->passes[1];
    ngx_memzero(a->passes, sizeof(a->passes));

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
                                         "mongo delete of a noted entry",
                                         ngx_http_bytemark_mongo_purge,
                                         ngx_http_bytemark_repair_done,
                                         blcf->mongo_timeout);
    if (call == NULL) {
        return;
    }

    call->bmcf = bmcf;
    call->user_id = ctx->user_id;
    call->fill_timestamp = ctx->note_stamp;
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
                                 call->fill_timestamp);
}
