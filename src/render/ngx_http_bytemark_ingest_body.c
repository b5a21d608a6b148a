
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Ingest bodies (SPEC 3.3): one pass object or an array of them, every field
 * checked before anything is written, defaults filled in.  Pure functions of
 * the bytes: no nginx request, no pool, so they are easy to fuzz.
 *
 * The error text names the field ("passes[2].status: ...") and is meant for
 * the client; field names the client invented are cut to a safe length.
 */


#include "ngx_http_bytemark_render.h"

#include <openssl/evp.h>


/* the payload's canonical form: compact, keys sorted, UTF-8, "/" as is */
#define NGX_HTTP_BYTEMARK_CANONICAL  (JSON_COMPACT | JSON_SORT_KEYS      \
                                      | JSON_ENCODE_ANY)

#define NGX_HTTP_BYTEMARK_NAME_MAX   48

/* MariaDB's JSON column refuses documents nested 32 levels or deeper */
#define NGX_HTTP_BYTEMARK_PAYLOAD_DEPTH  31


static ngx_int_t ngx_http_bytemark_parse_pass(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, int64_t now, ngx_http_bytemark_ingest_pass_t *p,
    char *err, size_t size);
static ngx_int_t ngx_http_bytemark_pass_fields(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, char *err, size_t size);
static ngx_int_t ngx_http_bytemark_pass_names(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, ngx_http_bytemark_ingest_pass_t *p, char *err,
    size_t size);
static ngx_int_t ngx_http_bytemark_pass_numbers(json_t *obj,
    ngx_uint_t index, ngx_uint_t batch, ngx_http_bytemark_ingest_pass_t *p,
    char *err, size_t size);
static json_t *ngx_http_bytemark_pass_payload(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, ngx_http_bytemark_ingest_pass_t *p, char *err,
    size_t size);
static ngx_int_t ngx_http_bytemark_check_status(json_t *v);
static ngx_int_t ngx_http_bytemark_check_hash(json_t *v);
static ngx_uint_t ngx_http_bytemark_json_depth(json_t *v, ngx_uint_t limit);
static ngx_int_t ngx_http_bytemark_sha256_hex(const char *data, size_t len,
    char *hex);
static void ngx_http_bytemark_field_error(char *err, size_t size,
    ngx_uint_t index, ngx_uint_t batch, const char *field, const char *what);


ngx_int_t
ngx_http_bytemark_parse_ingest(const u_char *data, size_t len,
    ngx_uint_t max_passes, int64_t now,
    ngx_http_bytemark_ingest_pass_t **passes, ngx_uint_t *npasses,
    char *err, size_t size)
{
    json_t                           *root, *item;
    size_t                            n, i;
    json_error_t                      jerr;
    ngx_uint_t                        batch;
    ngx_http_bytemark_ingest_pass_t  *p;

    *passes = NULL;
    *npasses = 0;

    root = json_loadb((const char *) data, len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        snprintf(err, size, "the body is not valid JSON (line %d, column %d)",
                 jerr.line, jerr.column);
        return NGX_ERROR;
    }

    batch = json_is_array(root);
    n = batch ? json_array_size(root) : 1;

    if (!batch && !json_is_object(root)) {
        snprintf(err, size, "the body must be a pass object or an array of "
                 "pass objects");
        goto failed;
    }

    if (n == 0) {
        snprintf(err, size, "the body holds no pass");
        goto failed;
    }

    if (n > max_passes) {
        snprintf(err, size, "the body holds %zu passes, more than the %u "
                 "allowed", n, (unsigned) max_passes);
        goto failed;
    }

    p = calloc(n, sizeof(ngx_http_bytemark_ingest_pass_t));
    if (p == NULL) {
        snprintf(err, size, "out of memory");
        goto failed;
    }

    for (i = 0; i < n; i++) {
        item = batch ? json_array_get(root, i) : root;

        if (ngx_http_bytemark_parse_pass(item, i, batch, now, &p[i], err, size)
            != NGX_OK)
        {
            ngx_http_bytemark_ingest_passes_free(p, n);
            goto failed;
        }
    }

    json_decref(root);

    *passes = p;
    *npasses = n;

    return NGX_OK;

failed:

    json_decref(root);

    return NGX_ERROR;
}


void
ngx_http_bytemark_ingest_passes_free(ngx_http_bytemark_ingest_pass_t *passes,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    if (passes == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(passes[i].status);
        free(passes[i].payload);

        if (passes[i].object) {
            json_decref(passes[i].object);
        }
    }

    free(passes);
}


static ngx_int_t
ngx_http_bytemark_parse_pass(json_t *obj, ngx_uint_t index, ngx_uint_t batch,
    int64_t now, ngx_http_bytemark_ingest_pass_t *p, char *err, size_t size)
{
    json_t  *payload;

    if (!json_is_object(obj)) {
        ngx_http_bytemark_field_error(err, size, index, batch, NULL,
                                      "must be a pass object");
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_pass_fields(obj, index, batch, err, size)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_pass_names(obj, index, batch, p, err, size)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p->timestamp = now;

    if (ngx_http_bytemark_pass_numbers(obj, index, batch, p, err, size)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    payload = ngx_http_bytemark_pass_payload(obj, index, batch, p, err, size);
    if (payload == NULL) {
        return NGX_ERROR;
    }

    /* the pass as a MySQL read would render it, so ETags agree */
    p->object = json_pack("{s:s#,s:I,s:s,s:I,s:O,s:s}",
                          "pass_uuid", p->uuid,
                          (int) NGX_HTTP_BYTEMARK_UUID_LEN,
                          "timestamp", (json_int_t) p->timestamp,
                          "status", p->status,
                          "free_ticket_status",
                          (json_int_t) p->free_ticket_status,
                          "payload", payload,
                          "payload_hash", p->payload_hash);

    if (p->status == NULL || p->object == NULL) {
        snprintf(err, size, "out of memory");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* every key is a pass field: a misspelt one is an error, not ignored */

static ngx_int_t
ngx_http_bytemark_pass_fields(json_t *obj, ngx_uint_t index, ngx_uint_t batch,
    char *err, size_t size)
{
    json_t      *v;
    const char  *key;

    json_object_foreach(obj, key, v) {
        if (strcmp(key, "pass_uuid") && strcmp(key, "status")
            && strcmp(key, "version") && strcmp(key, "free_ticket_status")
            && strcmp(key, "payload") && strcmp(key, "timestamp")
            && strcmp(key, "payload_hash"))
        {
            ngx_http_bytemark_field_error(err, size, index, batch, key,
                                          "is not a pass field");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the required fields: pass_uuid and status */

static ngx_int_t
ngx_http_bytemark_pass_names(json_t *obj, ngx_uint_t index, ngx_uint_t batch,
    ngx_http_bytemark_ingest_pass_t *p, char *err, size_t size)
{
    json_t     *v;
    ngx_str_t   s;

    v = json_object_get(obj, "pass_uuid");
    s.data = (u_char *) json_string_value(v);
    s.len = json_string_length(v);

    if (!json_is_string(v) || ngx_http_bytemark_parse_uuid(&s, p->uuid)
                              != NGX_OK)
    {
        ngx_http_bytemark_field_error(err, size, index, batch, "pass_uuid",
                                      v ? "must be a canonical UUID string"
                                        : "is required");
        return NGX_ERROR;
    }

    v = json_object_get(obj, "status");

    if (ngx_http_bytemark_check_status(v) != NGX_OK) {
        ngx_http_bytemark_field_error(err, size, index, batch, "status",
                                      v ? "must be a string of 1-32 "
                                          "characters without control "
                                          "characters"
                                        : "is required");
        return NGX_ERROR;
    }

    p->status = strdup(json_string_value(v));

    return NGX_OK;
}


/* the optional numbers; p->timestamp holds its default on entry */

static ngx_int_t
ngx_http_bytemark_pass_numbers(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, ngx_http_bytemark_ingest_pass_t *p, char *err,
    size_t size)
{
    json_t      *v;
    json_int_t   n;

    v = json_object_get(obj, "version");
    p->version = 3;

    if (v) {
        n = json_integer_value(v);

        if (!json_is_integer(v) || (n != 3 && n != 4)) {
            ngx_http_bytemark_field_error(err, size, index, batch, "version",
                                          "must be 3 or 4");
            return NGX_ERROR;
        }

        p->version = (ngx_uint_t) n;
    }

    v = json_object_get(obj, "free_ticket_status");

    if (v) {
        n = json_integer_value(v);

        if (!json_is_integer(v) || n < -128 || n > 127) {
            ngx_http_bytemark_field_error(err, size, index, batch,
                                          "free_ticket_status",
                                          "must be an integer in -128..127");
            return NGX_ERROR;
        }

        p->free_ticket_status = (ngx_int_t) n;
    }

    v = json_object_get(obj, "timestamp");

    if (v) {
        n = json_integer_value(v);

        if (!json_is_integer(v) || n < 0) {
            ngx_http_bytemark_field_error(err, size, index, batch, "timestamp",
                                          "must be an integer number of ms "
                                          ">= 0");
            return NGX_ERROR;
        }

        p->timestamp = (int64_t) n;
    }

    return NGX_OK;
}


/*
 * The payload, normalized, its canonical text (p->payload, NULL for JSON
 * null) and its hash, given or computed; returns the payload (owned by obj)
 * or NULL on an error.
 */

static json_t *
ngx_http_bytemark_pass_payload(json_t *obj, ngx_uint_t index,
    ngx_uint_t batch, ngx_http_bytemark_ingest_pass_t *p, char *err,
    size_t size)
{
    char    *canonical;
    json_t  *payload, *hash;

    payload = json_object_get(obj, "payload");

    if (payload == NULL) {
        payload = json_null();

    } else {
        /* 2.0 is 2, as for the JavaScript clients that hash payloads too */
        payload = ngx_http_bytemark_json_normalize(json_incref(payload));
        json_object_set_new(obj, "payload", payload);
    }

    if (ngx_http_bytemark_json_depth(payload, NGX_HTTP_BYTEMARK_PAYLOAD_DEPTH)
        > NGX_HTTP_BYTEMARK_PAYLOAD_DEPTH)
    {
        ngx_http_bytemark_field_error(err, size, index, batch, "payload",
                                      "is nested deeper than 31 levels");
        return NULL;
    }

    canonical = json_dumps(payload, NGX_HTTP_BYTEMARK_CANONICAL);
    if (canonical == NULL) {
        ngx_http_bytemark_field_error(err, size, index, batch, "payload",
                                      "cannot be serialized");
        return NULL;
    }

    hash = json_object_get(obj, "payload_hash");

    if (hash) {
        if (ngx_http_bytemark_check_hash(hash) != NGX_OK) {
            free(canonical);
            ngx_http_bytemark_field_error(err, size, index, batch,
                                          "payload_hash",
                                          "must be a string of 1-64 bytes "
                                          "without control characters or "
                                          "trailing blanks");
            return NULL;
        }

        ngx_cpystrn((u_char *) p->payload_hash,
                    (u_char *) json_string_value(hash), 65);

    } else if (ngx_http_bytemark_sha256_hex(canonical, strlen(canonical),
                                            p->payload_hash)
               != NGX_OK)
    {
        free(canonical);
        snprintf(err, size, "out of memory");
        return NULL;
    }

    /* JSON null is stored as SQL NULL */
    if (json_is_null(payload)) {
        free(canonical);
        canonical = NULL;
    }

    p->payload = canonical;

    return payload;
}


/* 1-32 characters (code points: the column is VARCHAR(32) utf8mb4) */

static ngx_int_t
ngx_http_bytemark_check_status(json_t *v)
{
    size_t         i, len, chars;
    const u_char  *s;

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = (const u_char *) json_string_value(v);
    len = json_string_length(v);
    chars = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return NGX_ERROR;
        }

        /* jansson checked the UTF-8: count the bytes that start a char */
        if ((s[i] & 0xc0) != 0x80) {
            chars++;
        }
    }

    return (chars >= 1 && chars <= NGX_HTTP_BYTEMARK_STATUS_MAX)
           ? NGX_OK : NGX_ERROR;
}


/*
 * The column is CHAR(64): it drops trailing blanks, so such a hash would
 * read back different from the one written.
 */

static ngx_int_t
ngx_http_bytemark_check_hash(json_t *v)
{
    size_t         i, len;
    const u_char  *s;

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = (const u_char *) json_string_value(v);
    len = json_string_length(v);

    if (len == 0 || len > 64 || s[len - 1] == ' ') {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* levels of arrays and objects, counted no further than limit + 1 */

static ngx_uint_t
ngx_http_bytemark_json_depth(json_t *v, ngx_uint_t limit)
{
    size_t       i;
    json_t      *child;
    ngx_uint_t   d, max;
    const char  *key;

    if (!json_is_object(v) && !json_is_array(v)) {
        return 0;
    }

    if (limit == 0) {
        return 1;
    }

    max = 0;

    if (json_is_array(v)) {
        json_array_foreach(v, i, child) {
            d = ngx_http_bytemark_json_depth(child, limit - 1);
            max = ngx_max(max, d);
        }

    } else {
        json_object_foreach(v, key, child) {
            d = ngx_http_bytemark_json_depth(child, limit - 1);
            max = ngx_max(max, d);
        }
    }

    return max + 1;
}


static ngx_int_t
ngx_http_bytemark_sha256_hex(const char *data, size_t len, char *hex)
{
    u_char         md[EVP_MAX_MD_SIZE];
    unsigned int   mdlen;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        return NGX_ERROR;
    }

    *ngx_hex_dump((u_char *) hex, md, mdlen) = '\0';

    return NGX_OK;
}


static void
ngx_http_bytemark_field_error(char *err, size_t size, ngx_uint_t index,
    ngx_uint_t batch, const char *field, const char *what)
{
    char    name[NGX_HTTP_BYTEMARK_NAME_MAX + 4];
    size_t  len;

    name[0] = '\0';

    if (field) {
        len = ngx_strlen(field);

        if (len > NGX_HTTP_BYTEMARK_NAME_MAX) {
            len = NGX_HTTP_BYTEMARK_NAME_MAX;

            /* do not cut a UTF-8 sequence in two */
            while (len > 0 && (((u_char) field[len]) & 0xc0) == 0x80) {
                len--;
            }

            ngx_memcpy(name, field, len);
            ngx_memcpy(name + len, "...", 4);

        } else {
            ngx_memcpy(name, field, len + 1);
        }
    }

    if (batch) {
        snprintf(err, size, "passes[%u]%s%s %s", (unsigned) index,
                 field ? "." : "", name, what);

    } else {
        snprintf(err, size, "%s%s%s", name, field ? " " : "the pass ", what);
    }
}
