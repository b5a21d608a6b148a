
/*
 * The response layer: the one place that writes bodies, ETags and the
 * SPEC's errors.  It knows the render layer's pass arrays and nothing of
 * the backends.
 */

#ifndef _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_


#include "ngx_http_bytemark_render.h"


/* response */
ngx_int_t ngx_http_bytemark_send_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp);
ngx_int_t ngx_http_bytemark_send_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a);
ngx_int_t ngx_http_bytemark_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_bytemark_send_not_allowed(ngx_http_request_t *r,
    const char *allow);
ngx_int_t ngx_http_bytemark_send_written(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_uint_t written);
ngx_int_t ngx_http_bytemark_send_no_content(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_send_cached(ngx_http_request_t *r,
    ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source);
ngx_int_t ngx_http_bytemark_unavailable(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_send_body(ngx_http_request_t *r, ngx_str_t *type,
    ngx_str_t *body);

/*
 * The micro-cache (flow layer, above) keeps the 200s the writer writes and
 * must hear of an error that ends a lookup; it hands the writer these two
 * at configuration.  Unset, the writer keeps nothing.
 */
typedef void (*ngx_http_bytemark_keep_pt)(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_str_t *body, ngx_str_t *etag);
typedef void (*ngx_http_bytemark_drop_pt)(ngx_http_bytemark_ctx_t *ctx);

void ngx_http_bytemark_response_cache(ngx_http_bytemark_keep_pt keep,
    ngx_http_bytemark_drop_pt drop);


#endif /* _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_ */
