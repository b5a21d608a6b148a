
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_tickets: GET/HEAD the passes of one user (SPEC 3.1).
 * Input is checked here; the lookup itself is ngx_http_bytemark_lookup.c.
 */


#include "ngx_http_bytemark_http.h"


ngx_int_t
ngx_http_bytemark_tickets_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_bytemark_request_init(r, NGX_HTTP_BYTEMARK_TICKETS,
                                         NGX_HTTP_GET|NGX_HTTP_HEAD,
                                         "GET, HEAD", &rc);
    if (ctx == NULL) {
        return rc;
    }

    rc = ngx_http_bytemark_parse_filter(r, &ctx->filter);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "invalid_argument",
                   "status must be a comma-separated list of 1-32 byte "
                   "values and version one of 3, 4, all");
    }

    rc = ngx_http_bytemark_microcache_lookup(r, ctx);

    if (rc != NGX_DECLINED) {
        /* answered from the micro-cache, or waiting for another lookup */
        return rc;
    }

    return ngx_http_bytemark_lookup_start(r, ctx);
}
