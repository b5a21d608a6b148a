
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_pass: GET/HEAD one pass of one user (SPEC 3.2).
 * Input is checked here; the lookup itself is ngx_http_bytemark_lookup.c.
 */


#include "ngx_http_bytemark_http.h"


ngx_int_t
ngx_http_bytemark_pass_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      uuid;
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    ctx = ngx_http_bytemark_request_init(r, NGX_HTTP_BYTEMARK_PASS,
                                         NGX_HTTP_GET|NGX_HTTP_HEAD,
                                         "GET, HEAD", &rc);
    if (ctx == NULL) {
        return rc;
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (ngx_http_complex_value(r, blcf->pass_uuid, &uuid) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_bytemark_parse_uuid(&uuid, ctx->uuid) != NGX_OK) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "invalid_pass_uuid",
                   "the pass uuid must be 8-4-4-4-12 hexadecimal digits");
    }

    rc = ngx_http_bytemark_microcache_lookup(r, ctx);

    if (rc != NGX_DECLINED) {
        /* answered from the micro-cache, or waiting for another lookup */
        return rc;
    }

    return ngx_http_bytemark_lookup_start(r, ctx);
}
