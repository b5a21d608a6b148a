
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Client input: user ids, pass uuids and the query arguments of the tickets
 * handler.  Everything is checked here, before any backend sees it.
 */


#include "ngx_http_bytemark_http.h"


static ngx_int_t ngx_http_bytemark_parse_statuses(ngx_http_request_t *r,
    ngx_str_t *arg, ngx_http_bytemark_filter_t *f);
static u_char ngx_http_bytemark_hex(u_char c);


/* ASCII digits, no sign, no leading zero, 1 .. 2^53-1 */

ngx_int_t
ngx_http_bytemark_parse_user_id(ngx_str_t *s, uint64_t *id)
{
    uint64_t    v;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > 16 || s->data[0] == '0') {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }

        v = v * 10 + (s->data[i] - '0');
    }

    if (v > NGX_HTTP_BYTEMARK_MAX_USER_ID) {
        return NGX_ERROR;
    }

    *id = v;

    return NGX_OK;
}


/*
 * What every handler does first: refuse other methods (405 with Allow),
 * create the request context and read the user id (400 when invalid).
 * Returns the context, or NULL and in *rc what the handler must return (a
 * response already sent returns NGX_OK too, hence not a plain rc).
 */

ngx_http_bytemark_ctx_t *
ngx_http_bytemark_request_init(ngx_http_request_t *r, ngx_uint_t handler,
    ngx_uint_t methods, const char *allow, ngx_int_t *rc)
{
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    if (handler != NGX_HTTP_BYTEMARK_INGEST) {
        /* only an ingest reads its body */
        *rc = ngx_http_discard_request_body(r);
        if (*rc != NGX_OK) {
            return NULL;
        }
    }

    if (!(r->method & methods)) {
        *rc = ngx_http_bytemark_send_not_allowed(r, allow);
        return NULL;
    }

    *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_bytemark_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->handler = handler;
    ctx->filter.versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;
    ngx_http_set_ctx(r, ctx, ngx_http_bytemark_module);

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (ngx_http_complex_value(r, blcf->user_id, &ctx->user_id_text)
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_http_bytemark_parse_user_id(&ctx->user_id_text, &ctx->user_id)
        != NGX_OK)
    {
        /* a POST whose body nobody will read */
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NULL;
        }

        *rc = ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                  "invalid_user_id",
                  "the user id must be a decimal integer in 1..2^53-1");
        return NULL;
    }

    if (ngx_http_bytemark_request_cleanup(r, ctx) != NGX_OK) {
        return NULL;
    }

    return ctx;
}


/*
 * Strict percent-decoding: "%XX" with two hex digits, "+" stays "+".
 * dst must hold src->len bytes.
 */

ngx_int_t
ngx_http_bytemark_percent_decode(ngx_str_t *src, u_char *dst, size_t *len)
{
    u_char      *p, *end, c, hi, lo;
    size_t       n;

    p = src->data;
    end = p + src->len;
    n = 0;

    while (p < end) {
        if (*p != '%') {
            dst[n++] = *p++;
            continue;
        }

        if (end - p < 3) {
            return NGX_ERROR;
        }

        hi = ngx_http_bytemark_hex(p[1]);
        lo = ngx_http_bytemark_hex(p[2]);

        if (hi == 0xff || lo == 0xff) {
            return NGX_ERROR;
        }

        c = (u_char) ((hi << 4) | lo);

        dst[n++] = c;
        p += 3;
    }

    *len = n;

    return NGX_OK;
}


/* the value of a hex digit, 0xff for anything else */

static u_char
ngx_http_bytemark_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return 0xff;
}


/*
 * ?status=A[,B...]&version=3|4|all
 * NGX_DECLINED means "400 invalid_argument".
 */

ngx_int_t
ngx_http_bytemark_parse_filter(ngx_http_request_t *r,
    ngx_http_bytemark_filter_t *f)
{
    u_char     buf[16];
    size_t     len;
    ngx_str_t  arg;

    f->statuses = NULL;
    f->versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;

    if (ngx_http_arg(r, (u_char *) "version", 7, &arg) == NGX_OK) {

        /* decoded first: "%61%6c%6c" is "all" */
        if (arg.len > sizeof(buf)
            || ngx_http_bytemark_percent_decode(&arg, buf, &len) != NGX_OK)
        {
            return NGX_DECLINED;
        }

        if (len == 1 && buf[0] == '3') {
            f->versions = NGX_HTTP_BYTEMARK_V3;

        } else if (len == 1 && buf[0] == '4') {
            f->versions = NGX_HTTP_BYTEMARK_V4;

        } else if (len != 3 || ngx_strncmp(buf, "all", 3) != 0) {
            return NGX_DECLINED;
        }
    }

    if (ngx_http_arg(r, (u_char *) "status", 6, &arg) == NGX_OK) {
        return ngx_http_bytemark_parse_statuses(r, &arg, f);
    }

    return NGX_OK;
}


/* split on literal commas first, then decode each element */

static ngx_int_t
ngx_http_bytemark_parse_statuses(ngx_http_request_t *r, ngx_str_t *arg,
    ngx_http_bytemark_filter_t *f)
{
    u_char      *p, *end, *comma;
    size_t       len;
    ngx_str_t    elt, *s;
    ngx_uint_t   i;

    f->statuses = ngx_array_create(r->pool, 4, sizeof(ngx_str_t));
    if (f->statuses == NULL) {
        return NGX_ERROR;
    }

    p = arg->data;
    end = p + arg->len;

    for ( ;; ) {
        comma = ngx_strlchr(p, end, ',');

        elt.data = p;
        elt.len = (comma ? comma : end) - p;

        if (elt.len == 0 || elt.len > 3 * NGX_HTTP_BYTEMARK_STATUS_MAX) {
            return NGX_DECLINED;
        }

        s = ngx_array_push(f->statuses);
        if (s == NULL) {
            return NGX_ERROR;
        }

        s->data = ngx_pnalloc(r->pool, elt.len);
        if (s->data == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_bytemark_percent_decode(&elt, s->data, &len) != NGX_OK
            || len == 0 || len > NGX_HTTP_BYTEMARK_STATUS_MAX)
        {
            return NGX_DECLINED;
        }

        s->len = len;

        for (i = 0; i < len; i++) {
            if (s->data[i] < 0x20 || s->data[i] == 0x7f) {
                return NGX_DECLINED;
            }
        }

        if (comma == NULL) {
            return NGX_OK;
        }

        p = comma + 1;
    }
}
