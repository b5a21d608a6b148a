
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A request's end, whichever way it comes (answered, or the client gone):
 * a call still in flight is abandoned, never freed under its thread, and
 * what the request holds is given back.  Here rather than in the call
 * layer because it reaches into what sits above the call: a MongoDB lookup
 * still queued leaves its batch, the micro-cache placeholder is released.
 */


#include "ngx_http_bytemark_flow.h"


static void ngx_http_bytemark_request_done(void *data);


/*
 * Registered once per request: whether it ends normally or the client goes
 * away, a call still in flight is abandoned, never freed under its thread.
 */

ngx_int_t
ngx_http_bytemark_request_cleanup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_cleanup_t  *cln;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_bytemark_request_done;
    cln->data = ctx;

    return NGX_OK;
}


static void
ngx_http_bytemark_request_done(void *data)
{
    ngx_http_bytemark_ctx_t *ctx = data;

    ngx_http_bytemark_call_t  *call;

    call = ctx->call;

    if (call) {
        ctx->call = NULL;
        ngx_http_bytemark_call_abandon(call);
    }

    ngx_http_bytemark_answer_release(&ctx->stale);

    /* a lookup that ends without an answer must not keep others waiting */
    ngx_http_bytemark_microcache_release(ctx);

    ngx_http_bytemark_ingest_passes_free(ctx->passes, ctx->npasses);
    ctx->passes = NULL;
}
