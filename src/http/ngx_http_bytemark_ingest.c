
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_ingest: POST one pass or an array of them for a user (SPEC 3.3).
 *
 * The body is read the nginx way (client_max_body_size, temp files) and
 * every field is checked (render/ngx_http_bytemark_ingest_body.c) before
 * anything is written; then the ingest starts
 * (flow/ngx_http_bytemark_ingest_flow.c).
 */


#include "ngx_http_bytemark_http.h"


#define NGX_HTTP_BYTEMARK_BODY_ERR  256


static void ngx_http_bytemark_ingest_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_bytemark_ingest_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
static ngx_int_t ngx_http_bytemark_read_body(ngx_http_request_t *r,
    ngx_str_t *body);


ngx_int_t
ngx_http_bytemark_ingest_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_bytemark_request_init(r, NGX_HTTP_BYTEMARK_INGEST,
                                         NGX_HTTP_POST, "POST", &rc);
    if (ctx == NULL) {
        return rc;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_bytemark_ingest_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * The whole body is here.  The reference the body reader took is the one
 * the handler's NGX_DONE gave back, so a posted call needs no finalize now:
 * its done() finalizes the request.
 */

static void
ngx_http_bytemark_ingest_body(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    rc = ngx_http_bytemark_ingest_start(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_bytemark_ingest_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    char                           err[NGX_HTTP_BYTEMARK_BODY_ERR];
    ngx_str_t                      body;
    ngx_http_bytemark_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (ngx_http_bytemark_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (body.len == 0) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "invalid_body", "the body is empty: send a pass object "
                   "or an array of pass objects");
    }

    if (ngx_http_bytemark_parse_ingest(body.data, body.len,
                                       blcf->ingest_max_passes,
                                       ngx_http_bytemark_now_ms(),
                                       &ctx->passes, &ctx->npasses,
                                       err, sizeof(err))
        != NGX_OK)
    {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_body", err);
    }

    return ngx_http_bytemark_ingest_commit(r, ctx);
}


/* the body in one piece, from memory buffers or the temp file */

static ngx_int_t
ngx_http_bytemark_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            if (b->last > b->pos) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }

            continue;
        }

        /* a small local file, as nginx's own modules read it */
        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);
        if (n != b->file_last - b->file_pos) {
            return NGX_ERROR;
        }

        p += n;
    }

    body->len = p - body->data;

    return NGX_OK;
}
