
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_purge: DELETE a user's cache entry (SPEC 3.4).  The handler
 * checks the request and starts the purge
 * (flow/ngx_http_bytemark_purge_flow.c).
 */


#include "ngx_http_bytemark_http.h"


ngx_int_t
ngx_http_bytemark_purge_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_bytemark_request_init(r, NGX_HTTP_BYTEMARK_PURGE,
                                         NGX_HTTP_DELETE, "DELETE", &rc);
    if (ctx == NULL) {
        return rc;
    }

    return ngx_http_bytemark_purge_start(r, ctx);
}
