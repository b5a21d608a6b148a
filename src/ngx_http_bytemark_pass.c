
/*
 * bytemark_pass: GET/HEAD one pass of one user (SPEC 3.2).
 * Input is checked here; the lookup itself is ngx_http_bytemark_lookup.c.
 */


#include "ngx_http_bytemark_module.h"


ngx_int_t
ngx_http_bytemark_pass_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      uuid;
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_bytemark_send_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_bytemark_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->handler = NGX_HTTP_BYTEMARK_PASS;
    ctx->filter.versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;
    ngx_http_set_ctx(r, ctx, ngx_http_bytemark_module);

    rc = ngx_http_bytemark_read_user_id(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "invalid_user_id",
                   "the user id must be a decimal integer in 1..2^53-1");
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

    if (ngx_http_bytemark_request_cleanup(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_bytemark_lookup_start(r, ctx);
}
