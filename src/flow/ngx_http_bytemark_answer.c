
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A request's answer: built by the response layer, stored in the
 * micro-cache (a 200 lookup answer), then sent, except by a background
 * refresh, which has no client.  An error is neither taken from nor kept
 * in the micro-cache: it releases the key the request held, so that the
 * requests waiting for it go on at once.
 */


#include "ngx_http_bytemark_flow.h"


static ngx_int_t ngx_http_bytemark_send_built(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_reply_t *reply);


ngx_int_t
ngx_http_bytemark_send_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp)
{
    ngx_http_bytemark_reply_t  reply;

    if (ngx_http_bytemark_build_tickets(r, ctx, passes, timestamp, &reply)
        != NGX_OK)
    {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "internal", "the answer cannot be "
                                            "rendered");
    }

    return ngx_http_bytemark_send_built(r, ctx, &reply);
}


ngx_int_t
ngx_http_bytemark_send_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a)
{
    ngx_int_t                  rc;
    ngx_http_bytemark_reply_t  reply;

    rc = ngx_http_bytemark_build_pass(r, ctx, a, &reply);

    if (rc == NGX_DECLINED) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "internal", "the answer cannot "
                                            "be rendered");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_bytemark_send_built(r, ctx, &reply);
}


/* store, then send: a refresh only stores */

static ngx_int_t
ngx_http_bytemark_send_built(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_reply_t *reply)
{
    ngx_http_bytemark_microcache_store(r, ctx, &reply->body, &reply->etag);

    if (ctx->mc_refresh) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "bytemark: micro-cache refresh of user %uL stored",
                       ctx->user_id);
        return NGX_OK;
    }

    return ngx_http_bytemark_send_reply(r, reply, &ctx->source);
}


ngx_int_t
ngx_http_bytemark_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx) {
        ngx_http_bytemark_microcache_release(ctx);

        blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

        if (blcf->microcache) {
            ngx_str_set(&ctx->cache_status, "BYPASS");
        }

        if (ctx->mc_refresh) {
            /* no client: nothing to send */
            return NGX_OK;
        }
    }

    return ngx_http_bytemark_response_error(r, status, code, message);
}


ngx_int_t
ngx_http_bytemark_unavailable(ngx_http_request_t *r)
{
    return ngx_http_bytemark_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
               "unavailable",
               "the pass service is temporarily unavailable, retry later");
}
