
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The response layer: the one place that builds bodies and ETags and
 * writes them, and the SPEC's errors.  It knows the render layer's pass
 * arrays and nothing of the backends nor of the micro-cache: the flow
 * layer builds an answer here, stores it there, and sends it (or, for a
 * background refresh, does not).
 */

#ifndef _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_


#include "ngx_http_bytemark_render.h"


/* a 200 lookup answer, built and not yet sent */
typedef struct {
    ngx_str_t                     body;
    ngx_str_t                     etag;
} ngx_http_bytemark_reply_t;


/* response */
ngx_int_t ngx_http_bytemark_build_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp, ngx_http_bytemark_reply_t *reply);
ngx_int_t ngx_http_bytemark_build_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a,
    ngx_http_bytemark_reply_t *reply);
ngx_int_t ngx_http_bytemark_send_reply(ngx_http_request_t *r,
    ngx_http_bytemark_reply_t *reply, ngx_str_t *source);
ngx_int_t ngx_http_bytemark_response_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_bytemark_send_not_allowed(ngx_http_request_t *r,
    const char *allow);
ngx_int_t ngx_http_bytemark_send_written(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_uint_t written);
ngx_int_t ngx_http_bytemark_send_no_content(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_send_cached(ngx_http_request_t *r,
    ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source);
ngx_int_t ngx_http_bytemark_send_body(ngx_http_request_t *r, ngx_str_t *type,
    ngx_str_t *body);
ngx_int_t ngx_http_bytemark_send_state(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, ngx_str_t *body);


#endif /* _NGX_HTTP_BYTEMARK_RESPONSE_H_INCLUDED_ */
