
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The one place that writes responses: lookup bodies with their ETag and
 * X-Bytemark-Source, and the SPEC's error bodies.
 *
 * Pass arrays are serialized once, compactly and with sorted keys, so the
 * same passes give the same bytes whichever backend answered; the ETag is
 * a hash of those bytes and the user id (not the timestamp), and nginx's
 * not_modified filter turns a matching If-None-Match into a 304.
 */


#include "ngx_http_bytemark_response.h"

#include <openssl/evp.h>


static ngx_int_t ngx_http_bytemark_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source);
static ngx_int_t ngx_http_bytemark_add_header(ngx_http_request_t *r,
    const char *key, ngx_str_t *value, ngx_table_elt_t **slot);
static ngx_int_t ngx_http_bytemark_etag(ngx_http_request_t *r,
    ngx_str_t *etag, ngx_str_t *parts, ngx_uint_t n);


/*
 * {"user_id":...,"timestamp":...,"passes":[...],"passes4":[...]}
 * passes NULL means empty; the filter decides which arrays are present.
 * The arrays' text was written by the pool thread (render.c).
 * NGX_ERROR: it cannot be rendered.
 */

ngx_int_t
ngx_http_bytemark_build_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp, ngx_http_bytemark_reply_t *reply)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   parts[3];

    ngx_str_null(&parts[1]);
    ngx_str_null(&parts[2]);

    if ((ctx->filter.versions & NGX_HTTP_BYTEMARK_V3)
        && ngx_http_bytemark_filter_passes(passes ? &passes[0] : NULL,
                                           &ctx->filter, r->pool, &parts[1])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if ((ctx->filter.versions & NGX_HTTP_BYTEMARK_V4)
        && ngx_http_bytemark_filter_passes(passes ? &passes[1] : NULL,
                                           &ctx->filter, r->pool, &parts[2])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    parts[0] = ctx->user_id_text;

    len = sizeof("{\"user_id\":,\"timestamp\":,\"passes\":,\"passes4\":}") - 1
          + NGX_INT64_LEN * 2 + parts[1].len + parts[2].len;

    reply->body.data = ngx_pnalloc(r->pool, len);
    if (reply->body.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(reply->body.data, "{\"user_id\":%uL,\"timestamp\":%L",
                    ctx->user_id, timestamp);

    if (parts[1].data) {
        p = ngx_cpymem(p, ",\"passes\":", sizeof(",\"passes\":") - 1);
        p = ngx_cpymem(p, parts[1].data, parts[1].len);
    }

    if (parts[2].data) {
        p = ngx_cpymem(p, ",\"passes4\":", sizeof(",\"passes4\":") - 1);
        p = ngx_cpymem(p, parts[2].data, parts[2].len);
    }

    *p++ = '}';
    reply->body.len = p - reply->body.data;

    return ngx_http_bytemark_etag(r, &reply->etag, parts, 3);
}


/*
 * {"user_id":...,"version":3|4,"pass":{...}}, the pass found in a.
 * NGX_DECLINED: a has no such pass; NGX_ERROR: no memory.
 */

ngx_int_t
ngx_http_bytemark_build_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a,
    ngx_http_bytemark_reply_t *reply)
{
    u_char                    *p;
    size_t                     len;
    ngx_str_t                  parts[3];
    ngx_uint_t                 version;
    ngx_http_bytemark_item_t  *item;

    item = ngx_http_bytemark_find_pass(a, ctx->uuid, &version);

    if (item == NULL) {
        return NGX_DECLINED;
    }

    parts[0] = ctx->user_id_text;
    parts[1].data = (u_char *) (version == 4 ? "4" : "3");
    parts[1].len = 1;
    parts[2].data = a->passes[version == 4].text.data + item->start;
    parts[2].len = item->len;

    len = sizeof("{\"user_id\":,\"version\":3,\"pass\":}") - 1
          + NGX_INT64_LEN + parts[2].len;

    reply->body.data = ngx_pnalloc(r->pool, len);
    if (reply->body.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(reply->body.data,
                    "{\"user_id\":%uL,\"version\":%V,\"pass\":%V}",
                    ctx->user_id, &parts[1], &parts[2]);
    reply->body.len = p - reply->body.data;

    return ngx_http_bytemark_etag(r, &reply->etag, parts, 3);
}


/* a built answer, sent: 200 with its ETag and X-Bytemark-Source */

ngx_int_t
ngx_http_bytemark_send_reply(ngx_http_request_t *r,
    ngx_http_bytemark_reply_t *reply, ngx_str_t *source)
{
    return ngx_http_bytemark_send(r, NGX_HTTP_OK, &reply->body, &reply->etag,
                                  source);
}


/*
 * {"error": code, "message": text}.  Texts are ours, never a backend's, so
 * nothing can leak; they may quote a client's field name, hence the JSON
 * encoder.
 */

ngx_int_t
ngx_http_bytemark_response_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    char       *dump;
    json_t     *obj;
    ngx_str_t   body, retry;

    obj = json_pack("{s:s,s:s}", "error", code, "message", message);
    dump = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

    if (obj) {
        json_decref(obj);
    }

    if (dump == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_strlen(dump);
    body.data = ngx_pnalloc(r->pool, body.len);
    if (body.data == NULL) {
        free(dump);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body.data, dump, body.len);
    free(dump);

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_str_set(&retry, "1");

        if (ngx_http_bytemark_add_header(r, "Retry-After", &retry, NULL)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_bytemark_send(r, status, &body, NULL, NULL);
}


/* an answer from the micro-cache, with the headers of the original */

ngx_int_t
ngx_http_bytemark_send_cached(ngx_http_request_t *r, ngx_str_t *body,
    ngx_str_t *etag, ngx_str_t *source)
{
    return ngx_http_bytemark_send(r, NGX_HTTP_OK, body, etag, source);
}


/* ingest: {"user_id":...,"written":N} */

ngx_int_t
ngx_http_bytemark_send_written(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_uint_t written)
{
    ngx_str_t  body;

    body.data = ngx_pnalloc(r->pool, sizeof("{\"user_id\":,\"written\":}") - 1
                                     + 2 * NGX_INT64_LEN);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_sprintf(body.data, "{\"user_id\":%uL,\"written\":%ui}",
                           ctx->user_id, written)
               - body.data;

    return ngx_http_bytemark_send(r, NGX_HTTP_OK, &body, NULL, NULL);
}


/* purge */

ngx_int_t
ngx_http_bytemark_send_no_content(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    return ngx_http_send_special(r, NGX_HTTP_LAST);
}


ngx_int_t
ngx_http_bytemark_send_not_allowed(ngx_http_request_t *r, const char *allow)
{
    ngx_str_t  value;

    value.data = (u_char *) allow;
    value.len = ngx_strlen(allow);

    if (ngx_http_bytemark_add_header(r, "Allow", &value, NULL) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* before the request's context: nothing of the micro-cache to tell */
    return ngx_http_bytemark_response_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed",
                                            "this method is not allowed "
                                            "here");
}


/*
 * A body of another type (the status page).  ngx_http_send_response() does
 * what ngx_http_bytemark_send() does, HEAD included.  The numbers change
 * with every request: no cache may keep them.
 */

ngx_int_t
ngx_http_bytemark_send_body(ngx_http_request_t *r, ngx_str_t *type,
    ngx_str_t *body)
{
    return ngx_http_bytemark_send_state(r, NGX_HTTP_OK, type, body);
}


/* the same with a status of its own (the health endpoint's 503) */

ngx_int_t
ngx_http_bytemark_send_state(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body)
{
    ngx_str_t                 no_store;
    ngx_http_complex_value_t  cv;

    ngx_str_set(&no_store, "no-store");

    if (ngx_http_bytemark_add_header(r, "Cache-Control", &no_store, NULL)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&cv, sizeof(ngx_http_complex_value_t));
    cv.value = *body;

    return ngx_http_send_response(r, status, type, &cv);
}


static ngx_int_t
ngx_http_bytemark_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source)
{
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_chain_t                    out;
    ngx_http_bytemark_loc_conf_t  *blcf;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (etag
        && ngx_http_bytemark_add_header(r, "ETag", etag,
                                        &r->headers_out.etag)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* an answer with an ETag is one user's: tickets, pass, micro-cached */
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (etag
        && blcf->cache_control.len
        && ngx_http_bytemark_add_header(r, "Cache-Control",
                                        &blcf->cache_control, NULL)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (source && source->len
        && ngx_http_bytemark_add_header(r, "X-Bytemark-Source", source, NULL)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_bytemark_add_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value, ngx_table_elt_t **slot)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    if (slot) {
        *slot = h;
    }

    return NGX_OK;
}


/*
 * A strong ETag: SHA-1 over the parts, each one length-prefixed.  The
 * digest is OpenSSL's, fetched once per worker: several times faster than
 * nginx's portable SHA-1 on a body of a few kilobytes.
 */

static ngx_int_t
ngx_http_bytemark_etag(ngx_http_request_t *r, ngx_str_t *etag,
    ngx_str_t *parts, ngx_uint_t n)
{
    u_char        digest[EVP_MAX_MD_SIZE], len[NGX_SIZE_T_LEN + 1], *p;
    ngx_uint_t    i;
    unsigned int  size;

    static EVP_MD      *md;
    static EVP_MD_CTX  *mdctx;

    if (md == NULL) {
        md = EVP_MD_fetch(NULL, "SHA1", NULL);
        mdctx = EVP_MD_CTX_new();

        if (md == NULL || mdctx == NULL) {
            EVP_MD_free(md);
            EVP_MD_CTX_free(mdctx);
            md = NULL;
            mdctx = NULL;
            return NGX_ERROR;
        }
    }

    if (EVP_DigestInit_ex2(mdctx, md, NULL) != 1) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(len, "%uz:", parts[i].len);

        if (EVP_DigestUpdate(mdctx, len, p - len) != 1
            || EVP_DigestUpdate(mdctx, parts[i].data, parts[i].len) != 1)
        {
            return NGX_ERROR;
        }
    }

    if (EVP_DigestFinal_ex(mdctx, digest, &size) != 1 || size != 20) {
        return NGX_ERROR;
    }

    etag->len = 2 + 2 * 20;
    etag->data = ngx_pnalloc(r->pool, etag->len);
    if (etag->data == NULL) {
        return NGX_ERROR;
    }

    etag->data[0] = '"';
    ngx_hex_dump(etag->data + 1, digest, 20);
    etag->data[etag->len - 1] = '"';

    return NGX_OK;
}
