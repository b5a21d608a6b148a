
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MySQL rows for a cache fill: copied off the result buffers on the event
 * loop (rows_add), made BSON in the fill's MongoDB thread (rows_to_bson).
 * The document of a row is the pass a lookup answers from it
 * (ngx_http_bytemark_passes_add_row(), json.c), as json_to_bson() writes
 * that pass's JSON: its members in the rendered order, numbers as int32
 * when they fit, the payload the value of its rendered text.
 */


#include "ngx_http_bytemark_render.h"

#include <bson/bson.h>


static ngx_int_t ngx_http_bytemark_row_to_bson(bson_t *doc,
    ngx_http_bytemark_pass_row_t *row);
static ngx_int_t ngx_http_bytemark_int_to_bson(bson_t *doc, const char *key,
    int64_t n);


/* a copy of the row, its text in one block that its uuid points to */

ngx_int_t
ngx_http_bytemark_rows_add(ngx_http_bytemark_rows_t *rows,
    ngx_http_bytemark_pass_row_t *row)
{
    u_char                        *p;
    ngx_uint_t                     nalloc;
    ngx_http_bytemark_pass_row_t  *r;

    if (rows->n == rows->nalloc) {
        nalloc = rows->nalloc ? 2 * rows->nalloc : 8;

        r = realloc(rows->rows, nalloc * sizeof(ngx_http_bytemark_pass_row_t));
        if (r == NULL) {
            return NGX_ERROR;
        }

        rows->rows = r;
        rows->nalloc = nalloc;
    }

    /* at least one byte: the block is found (and freed) through uuid.data */
    p = malloc(row->uuid.len + row->status.len + row->payload.len
               + row->hash.len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    r = &rows->rows[rows->n++];
    *r = *row;

    r->uuid.data = p;
    p = ngx_cpymem(p, row->uuid.data, row->uuid.len);

    r->status.data = p;
    p = ngx_cpymem(p, row->status.data, row->status.len);

    /* SQL NULL stays NULL */
    if (row->payload.data) {
        r->payload.data = p;
        p = ngx_cpymem(p, row->payload.data, row->payload.len);
    }

    if (row->hash.data) {
        r->hash.data = p;
        ngx_memcpy(p, row->hash.data, row->hash.len);
    }

    return NGX_OK;
}


void
ngx_http_bytemark_rows_free(ngx_http_bytemark_rows_t *rows)
{
    ngx_uint_t  i;

    for (i = 0; i < rows->n; i++) {
        free(rows->rows[i].uuid.data);
    }

    free(rows->rows);

    ngx_memzero(rows, sizeof(ngx_http_bytemark_rows_t));
}


/* thread: the rows as the array "key" of doc */

ngx_int_t
ngx_http_bytemark_rows_to_bson(void *doc, const char *key,
    ngx_http_bytemark_rows_t *rows)
{
    char         idx[24];
    bson_t      *parent = doc;
    bson_t       array, pass;
    ngx_uint_t   i;
    const char  *ikey;

    if (!bson_append_array_begin(parent, key, -1, &array)) {
        return NGX_ERROR;
    }

    for (i = 0; i < rows->n; i++) {
        bson_uint32_to_string((uint32_t) i, &ikey, idx, sizeof(idx));

        if (!bson_append_document_begin(&array, ikey, -1, &pass)
            || ngx_http_bytemark_row_to_bson(&pass, &rows->rows[i]) != NGX_OK
            || !bson_append_document_end(&array, &pass))
        {
            /* a child may be left open: the caller destroys the document */
            return NGX_ERROR;
        }
    }

    return bson_append_array_end(parent, &array) ? NGX_OK : NGX_ERROR;
}


/*
 * The members in the order passes_add_row() renders them; a payload or a
 * hash without a JSON form (not UTF-8) is left out, as it is there.
 */

static ngx_int_t
ngx_http_bytemark_row_to_bson(bson_t *doc, ngx_http_bytemark_pass_row_t *row)
{
    ngx_int_t  rc;

    if (ngx_http_bytemark_int_to_bson(doc, "free_ticket_status",
                                      row->free_ticket_status)
        != NGX_OK
        || !bson_append_utf8(doc, "pass_uuid", -1,
                             (const char *) row->uuid.data,
                             (int) row->uuid.len))
    {
        return NGX_ERROR;
    }

    if (row->payload.data == NULL) {
        rc = bson_append_null(doc, "payload", -1) ? NGX_OK : NGX_ERROR;

    } else {
        /* depth 2: under the array and the pass, as in the whole document */
        rc = ngx_http_bytemark_payload_to_bson(doc, "payload",
                                               row->payload.data,
                                               row->payload.len, 2);
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (row->hash.data == NULL) {
        rc = bson_append_null(doc, "payload_hash", -1) ? NGX_OK : NGX_ERROR;

    } else if (ngx_http_bytemark_utf8_valid(row->hash.data, row->hash.len)) {
        rc = bson_append_utf8(doc, "payload_hash", -1,
                              (const char *) row->hash.data,
                              (int) row->hash.len)
             ? NGX_OK : NGX_ERROR;
    }

    if (rc == NGX_ERROR
        || !bson_append_utf8(doc, "status", -1,
                             (const char *) row->status.data,
                             (int) row->status.len)
        || ngx_http_bytemark_int_to_bson(doc, "timestamp", row->timestamp)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* as json_to_bson() writes a JSON integer */

static ngx_int_t
ngx_http_bytemark_int_to_bson(bson_t *doc, const char *key, int64_t n)
{
    if (n >= INT32_MIN && n <= INT32_MAX) {
        return bson_append_int32(doc, key, -1, (int32_t) n)
               ? NGX_OK : NGX_ERROR;
    }

    return bson_append_int64(doc, key, -1, n) ? NGX_OK : NGX_ERROR;
}
