
/*
 * The one place that writes responses: lookup bodies with their ETag and
 * X-Bytemark-Source, and the SPEC's error bodies.
 *
 * Pass arrays are serialized once, compactly and with sorted keys, so the
 * same passes give the same bytes whichever backend answered; the ETag is
 * a hash of those bytes and the user id (not the timestamp), and nginx's
 * not_modified filter turns a matching If-None-Match into a 304.
 */


#include "ngx_http_bytemark_module.h"

#include <ngx_sha1.h>


#define NGX_HTTP_BYTEMARK_DUMP  (JSON_COMPACT | JSON_SORT_KEYS)


static ngx_int_t ngx_http_bytemark_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source);
static ngx_int_t ngx_http_bytemark_add_header(ngx_http_request_t *r,
    const char *key, ngx_str_t *value, ngx_table_elt_t **slot);
static ngx_int_t ngx_http_bytemark_etag(ngx_http_request_t *r,
    ngx_str_t *etag, ngx_str_t *parts, ngx_uint_t n);
static char *ngx_http_bytemark_dump(json_t *passes,
    ngx_http_bytemark_filter_t *f);


/*
 * {"user_id":...,"timestamp":...,"passes":[...],"passes4":[...]}
 * passes/passes4 NULL means empty; the filter decides which are present.
 */

ngx_int_t
ngx_http_bytemark_send_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, json_t *passes, json_t *passes4,
    int64_t timestamp)
{
    char        *p3, *p4;
    u_char      *p;
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t    body, etag, parts[3];

    p3 = NULL;
    p4 = NULL;
    ngx_str_null(&parts[1]);
    ngx_str_null(&parts[2]);

    if (ctx->filter.versions & NGX_HTTP_BYTEMARK_V3) {
        p3 = ngx_http_bytemark_dump(passes, &ctx->filter);
        if (p3 == NULL) {
            goto failed;
        }

        parts[1].data = (u_char *) p3;
        parts[1].len = ngx_strlen(p3);
    }

    if (ctx->filter.versions & NGX_HTTP_BYTEMARK_V4) {
        p4 = ngx_http_bytemark_dump(passes4, &ctx->filter);
        if (p4 == NULL) {
            goto failed;
        }

        parts[2].data = (u_char *) p4;
        parts[2].len = ngx_strlen(p4);
    }

    parts[0] = ctx->user_id_text;

    len = sizeof("{\"user_id\":,\"timestamp\":,\"passes\":,\"passes4\":}") - 1
          + NGX_INT64_LEN * 2 + parts[1].len + parts[2].len;

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        goto failed;
    }

    p = ngx_sprintf(body.data, "{\"user_id\":%uL,\"timestamp\":%L",
                    ctx->user_id, timestamp);

    if (p3) {
        p = ngx_sprintf(p, ",\"passes\":%V", &parts[1]);
    }

    if (p4) {
        p = ngx_sprintf(p, ",\"passes4\":%V", &parts[2]);
    }

    *p++ = '}';
    body.len = p - body.data;

    if (ngx_http_bytemark_etag(r, &etag, parts, 3) != NGX_OK) {
        goto failed;
    }

    free(p3);
    free(p4);

    ngx_http_bytemark_microcache_store(r, ctx, &body, &etag);

    rc = ngx_http_bytemark_send(r, NGX_HTTP_OK, &body, &etag, &ctx->source);

    return rc;

failed:

    free(p3);
    free(p4);

    return ngx_http_bytemark_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        "internal", "the answer cannot be "
                                        "rendered");
}


/* {"user_id":...,"version":3|4,"pass":{...}} */

ngx_int_t
ngx_http_bytemark_send_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, json_t *pass, ngx_uint_t version)
{
    char        *dump;
    u_char      *p;
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t    body, etag, parts[3];

    dump = json_dumps(pass, NGX_HTTP_BYTEMARK_DUMP);
    if (dump == NULL) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "internal", "the answer cannot "
                                            "be rendered");
    }

    parts[0] = ctx->user_id_text;
    parts[1].data = (u_char *) (version == 4 ? "4" : "3");
    parts[1].len = 1;
    parts[2].data = (u_char *) dump;
    parts[2].len = ngx_strlen(dump);

    len = sizeof("{\"user_id\":,\"version\":3,\"pass\":}") - 1
          + NGX_INT64_LEN + parts[2].len;

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        free(dump);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body.data, "{\"user_id\":%uL,\"version\":%V,\"pass\":%V}",
                    ctx->user_id, &parts[1], &parts[2]);
    body.len = p - body.data;

    rc = ngx_http_bytemark_etag(r, &etag, parts, 3);

    free(dump);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_bytemark_microcache_store(r, ctx, &body, &etag);

    return ngx_http_bytemark_send(r, NGX_HTTP_OK, &body, &etag, &ctx->source);
}


/*
 * {"error": code, "message": text}.  Texts are ours, never a backend's, so
 * nothing can leak; they may quote a client's field name, hence the JSON
 * encoder.
 */

ngx_int_t
ngx_http_bytemark_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message)
{
    char                          *dump;
    json_t                        *obj;
    ngx_str_t                      body, retry;
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    /* an error is neither taken from nor kept in the micro-cache */
    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (ctx) {
        ngx_http_bytemark_microcache_release(ctx);

        if (blcf->microcache) {
            ngx_str_set(&ctx->cache_status, "BYPASS");
        }
    }

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


ngx_int_t
ngx_http_bytemark_unavailable(ngx_http_request_t *r)
{
    return ngx_http_bytemark_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
               "unavailable",
               "the pass service is temporarily unavailable, retry later");
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

    return ngx_http_bytemark_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                        "method_not_allowed",
                                        "this method is not allowed here");
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

    return ngx_http_send_response(r, NGX_HTTP_OK, type, &cv);
}


static ngx_int_t
ngx_http_bytemark_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

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


/* a strong ETag: SHA-1 over the parts, each one length-prefixed */

static ngx_int_t
ngx_http_bytemark_etag(ngx_http_request_t *r, ngx_str_t *etag,
    ngx_str_t *parts, ngx_uint_t n)
{
    u_char      digest[20], len[NGX_SIZE_T_LEN + 1], *p;
    ngx_uint_t  i;
    ngx_sha1_t  sha1;

    ngx_sha1_init(&sha1);

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(len, "%uz:", parts[i].len);
        ngx_sha1_update(&sha1, len, p - len);
        ngx_sha1_update(&sha1, parts[i].data, parts[i].len);
    }

    ngx_sha1_final(digest, &sha1);

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


/* a malloc()ed compact dump of the filtered array ("[]" for NULL) */

static char *
ngx_http_bytemark_dump(json_t *passes, ngx_http_bytemark_filter_t *f)
{
    char    *s;
    json_t  *filtered;

    if (passes == NULL) {
        return strdup("[]");
    }

    filtered = ngx_http_bytemark_filter_passes(passes, f);
    if (filtered == NULL) {
        return NULL;
    }

    s = json_dumps(filtered, NGX_HTTP_BYTEMARK_DUMP);

    json_decref(filtered);

    return s;
}
