
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The render layer: JSON in and out, with no nginx request state, so that
 * it runs in MongoDB's pool threads, on the event loop (MySQL rows) and
 * under the fuzzers as it is.  BSON values and
 * MySQL rows become the canonical JSON the responses carry (render.c),
 * pass arrays are filtered and searched (json.c), ingest bodies are parsed
 * and checked (ingest_body.c), JSON becomes BSON for the cache writes.
 */

#ifndef _NGX_HTTP_BYTEMARK_RENDER_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_RENDER_H_INCLUDED_


#include "ngx_http_bytemark_core.h"


/* cache documents and rows to pass arrays; filters; JSON -> BSON (json.c) */
ngx_int_t ngx_http_bytemark_entry_from_bson(const void *doc,
    ngx_http_bytemark_answer_t *a, char *err, size_t size);
ngx_int_t ngx_http_bytemark_passes_add_row(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_pass_row_t *row);
ngx_int_t ngx_http_bytemark_filter_passes(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_filter_t *f, ngx_pool_t *pool, ngx_str_t *text);
ngx_http_bytemark_item_t *ngx_http_bytemark_find_pass(
    ngx_http_bytemark_answer_t *a, u_char *uuid, ngx_uint_t *version);
ngx_int_t ngx_http_bytemark_json_to_bson(void *doc, const char *key,
    json_t *v, ngx_uint_t depth);
json_t *ngx_http_bytemark_json_normalize(json_t *v);

/* MySQL rows kept for a cache fill, and made BSON (rows.c, payload.c) */
ngx_int_t ngx_http_bytemark_rows_add(ngx_http_bytemark_rows_t *rows,
    ngx_http_bytemark_pass_row_t *row);
void ngx_http_bytemark_rows_free(ngx_http_bytemark_rows_t *rows);
ngx_int_t ngx_http_bytemark_rows_to_bson(void *doc, const char *key,
    ngx_http_bytemark_rows_t *rows);
ngx_int_t ngx_http_bytemark_payload_to_bson(void *doc, const char *key,
    const u_char *text, size_t len, ngx_uint_t depth);

/* the canonical JSON writer (render.c), BSON values (bson.c), payload text
 * (payload.c), the pass arrays they fill (render.c) */
ngx_int_t ngx_http_bytemark_jbuf_reserve(ngx_http_bytemark_jbuf_t *b,
    size_t n);
ngx_int_t ngx_http_bytemark_jbuf_add(ngx_http_bytemark_jbuf_t *b,
    const void *data, size_t n);
void ngx_http_bytemark_jbuf_free(ngx_http_bytemark_jbuf_t *b);
ngx_int_t ngx_http_bytemark_render_int(ngx_http_bytemark_jbuf_t *b,
    int64_t n);
ngx_int_t ngx_http_bytemark_render_string(ngx_http_bytemark_jbuf_t *b,
    const u_char *s, size_t len);
ngx_int_t ngx_http_bytemark_render_bson(ngx_http_bytemark_jbuf_t *b,
    const void *iter, ngx_uint_t depth);
ngx_int_t ngx_http_bytemark_render_passes(ngx_http_bytemark_passes_t *list,
    const void *iter);
ngx_int_t ngx_http_bytemark_render_payload(ngx_http_bytemark_jbuf_t *b,
    const u_char *text, size_t len);
ngx_uint_t ngx_http_bytemark_json_canonical(const u_char *text, size_t len);
ngx_http_bytemark_item_t *ngx_http_bytemark_passes_begin(
    ngx_http_bytemark_passes_t *list);
void ngx_http_bytemark_passes_end(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_item_t *item);
ngx_int_t ngx_http_bytemark_passes_close(ngx_http_bytemark_passes_t *list);
void ngx_http_bytemark_passes_text(ngx_http_bytemark_passes_t *list,
    ngx_str_t *text);
void ngx_http_bytemark_passes_free(ngx_http_bytemark_passes_t *list);

/* the writer's pieces that bson.c and payload.c write with (render.c) */

/* a real's text: "%.17g" needs at most 24 bytes */
#define NGX_HTTP_BYTEMARK_REAL_LEN     32

size_t ngx_http_bytemark_plain_run(const u_char *s, size_t len);
ngx_uint_t ngx_http_bytemark_utf8_valid(const u_char *s, size_t len);
size_t ngx_http_bytemark_utf8_seq(const u_char *s, size_t len);
ngx_int_t ngx_http_bytemark_render_double(ngx_http_bytemark_jbuf_t *b,
    double d);
size_t ngx_http_bytemark_real_text(double d, char *buf);

static ngx_inline ngx_int_t
ngx_http_bytemark_jbuf_char(ngx_http_bytemark_jbuf_t *b, u_char c)
{
    if (b->len == b->size
        && ngx_http_bytemark_jbuf_reserve(b, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    b->data[b->len++] = c;

    return NGX_OK;
}

/* ingest bodies (ingest_body.c) */
ngx_int_t ngx_http_bytemark_parse_ingest(const u_char *data, size_t len,
    ngx_uint_t max_passes, int64_t now,
    ngx_http_bytemark_ingest_pass_t **passes, ngx_uint_t *npasses,
    char *err, size_t size);
void ngx_http_bytemark_ingest_passes_free(
    ngx_http_bytemark_ingest_pass_t *passes, ngx_uint_t n);


#endif /* _NGX_HTTP_BYTEMARK_RENDER_H_INCLUDED_ */
