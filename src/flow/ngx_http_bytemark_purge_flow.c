
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A purge (SPEC 3.4): one MongoDB delete of the user's cache entry, then
 * the micro-cached answers dropped and, once MongoDB said yes, the user's
 * note settled.  Idempotent: 204 whether there was an entry or not; 503
 * when MongoDB cannot answer.  The handler (http/purge.c) parses the
 * request and starts it here.
 */


#include "ngx_http_bytemark_flow.h"


static void ngx_http_bytemark_purge_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);


ngx_int_t
ngx_http_bytemark_purge_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    bmcf = ngx_http_bytemark_get_backend(r);

    rc = ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                     NGX_HTTP_BYTEMARK_GATE_PROBE
                                     | NGX_HTTP_BYTEMARK_GATE_COUNT_STUCK);
    if (rc != NGX_OK) {
        /* a purge would only be one more thread stuck in the driver */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "bytemark: mongo purge for user %uL not tried: %s",
                      ctx->user_id,
                      (rc == NGX_BUSY) ? "too many stuck MongoDB calls"
                                       : "circuit breaker open");
        return ngx_http_bytemark_unavailable(r);
    }

    call = ngx_http_bytemark_call_create(r, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_DELETE,
                                         "mongo purge",
                                         ngx_http_bytemark_mongo_purge,
                                         ngx_http_bytemark_purge_done,
                                         blcf->mongo_timeout);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->user_id = ctx->user_id;
    call->report = NGX_HTTP_BYTEMARK_REPORT_FOUND;

    /* a note older than this delete is settled by it */
    ctx->note_stamp = ngx_http_bytemark_now_ms();

    if (ngx_http_bytemark_call_start(call, 0) != NGX_OK) {
        return ngx_http_bytemark_unavailable(r);
    }

    return ngx_http_bytemark_call_hold(r);
}


static void
ngx_http_bytemark_purge_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
    ctx->mongo_used = 1;
    ctx->mongo_time = o->elapsed;

    /* the micro-cached answers go whatever MongoDB said */
    ngx_http_bytemark_microcache_invalidate(call->bmcf, ctx->user_id);

    if (o->result == NGX_HTTP_BYTEMARK_FOUND) {
        ngx_http_bytemark_note_clear(call->bmcf, ctx->user_id,
                                     ctx->note_stamp);
        rc = ngx_http_bytemark_send_no_content(r);

    } else {
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_PURGE);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "bytemark: mongo purge for user %uL failed after "
                      "%M ms: %s", call->user_id, o->elapsed,
                      o->error[0] ? o->error : "unknown error");
        rc = ngx_http_bytemark_unavailable(r);
    }

    ngx_http_finalize_request(r, rc);
}
