
/*
 * bytemark_tickets: GET/HEAD the passes of one user (SPEC 3.1).
 * Input is checked here; the lookup itself is ngx_http_bytemark_lookup.c.
 */


#include "ngx_http_bytemark_module.h"


ngx_int_t
ngx_http_bytemark_tickets_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

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

    ctx->handler = NGX_HTTP_BYTEMARK_TICKETS;
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

    if (ngx_http_bytemark_request_cleanup(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_bytemark_lookup_start(r, ctx);
}
