
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Payload text: a MySQL row's payload column is JSON text that jansson
 * wrote at ingest.  Text already canonical (the usual case) is copied as
 * it is; anything else goes through jansson to become so, so that a pass
 * has the same bytes whichever backend answered.
 */


#include "ngx_http_bytemark_render.h"


static const u_char *ngx_http_bytemark_canon_value(const u_char *p,
    const u_char *end, ngx_uint_t depth);
static const u_char *ngx_http_bytemark_canon_object(const u_char *p,
    const u_char *end, ngx_uint_t depth);
static const u_char *ngx_http_bytemark_canon_array(const u_char *p,
    const u_char *end, ngx_uint_t depth);
static const u_char *ngx_http_bytemark_canon_string(const u_char *p,
    const u_char *end, ngx_uint_t key);
static const u_char *ngx_http_bytemark_canon_number(const u_char *p,
    const u_char *end);


/*
 * A payload from MySQL, as JSON text.  Text that is already canonical, as
 * ingest writes it, is copied; other JSON goes through jansson once; text
 * that is not JSON is embedded as a string (SPEC 2).  NGX_DECLINED: text
 * that is neither JSON nor UTF-8, which has no JSON form at all.
 */

ngx_int_t
ngx_http_bytemark_render_payload(ngx_http_bytemark_jbuf_t *b,
    const u_char *text, size_t len)
{
    char          *dump;
    json_t        *v;
    ngx_int_t      rc;
    json_error_t   err;

    if (ngx_http_bytemark_json_canonical(text, len)) {
        return ngx_http_bytemark_jbuf_add(b, text, len);
    }

    v = json_loadb((const char *) text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                   &err);

    if (v == NULL) {
        return ngx_http_bytemark_render_string(b, text, len);
    }

    v = ngx_http_bytemark_json_normalize(v);

    dump = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(v);

    if (dump == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_bytemark_jbuf_add(b, dump, ngx_strlen(dump));

    free(dump);

    return rc;
}


/*
 * A payload from MySQL as the BSON value key of doc, for a cache fill: the
 * value of its rendered text, so that the cache holds what a lookup
 * answers.  Canonical text (what ingest writes) is parsed as it is; any
 * other is rendered first (its keys sorted, a string if it is not JSON).
 * NGX_DECLINED, nothing appended: neither JSON nor UTF-8, as
 * render_payload() leaves it out.  depth: the value's, for json_to_bson().
 */

ngx_int_t
ngx_http_bytemark_payload_to_bson(void *doc, const char *key,
    const u_char *text, size_t len, ngx_uint_t depth)
{
    json_t                    *v;
    ngx_int_t                  rc;
    json_error_t               err;
    ngx_http_bytemark_jbuf_t   b;

    ngx_memzero(&b, sizeof(ngx_http_bytemark_jbuf_t));

    if (!ngx_http_bytemark_json_canonical(text, len)) {
        rc = ngx_http_bytemark_render_payload(&b, text, len);

        if (rc != NGX_OK) {
            ngx_http_bytemark_jbuf_free(&b);
            return rc;
        }

        text = b.data;
        len = b.len;
    }

    v = json_loadb((const char *) text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                   &err);

    ngx_http_bytemark_jbuf_free(&b);

    if (v == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_bytemark_json_to_bson(doc, key, v, depth);

    json_decref(v);

    return rc;
}


/*
 * Whether text is exactly what the canonical writer would write for it:
 * no blanks, keys in strictly increasing order, integers of at most 18
 * digits, reals as "%.17g" writes them and not integral, only the escapes
 * jansson writes.  Anything else, even valid JSON, answers 0 and is left
 * to jansson; 1 must never be wrong.
 */

ngx_uint_t
ngx_http_bytemark_json_canonical(const u_char *text, size_t len)
{
    const u_char  *p;

    p = ngx_http_bytemark_canon_value(text, text + len, 0);

    return p == text + len;
}


static const u_char *
ngx_http_bytemark_canon_value(const u_char *p, const u_char *end,
    ngx_uint_t depth)
{
    if (p == end) {
        return NULL;
    }

    switch (*p) {

    case '{':
        return ngx_http_bytemark_canon_object(p, end, depth);

    case '[':
        return ngx_http_bytemark_canon_array(p, end, depth);

    case '"':
        return ngx_http_bytemark_canon_string(p, end, 0);

    case 't':
        return (end - p >= 4 && ngx_strncmp(p, "true", 4) == 0) ? p + 4
                                                                : NULL;

    case 'f':
        return (end - p >= 5 && ngx_strncmp(p, "false", 5) == 0) ? p + 5
                                                                 : NULL;

    case 'n':
        return (end - p >= 4 && ngx_strncmp(p, "null", 4) == 0) ? p + 4
                                                                : NULL;

    default:
        return ngx_http_bytemark_canon_number(p, end);
    }
}


/* an object at p ('{'), its keys in strictly ascending byte order */

static const u_char *
ngx_http_bytemark_canon_object(const u_char *p, const u_char *end,
    ngx_uint_t depth)
{
    size_t         klen, plen;
    const u_char  *key, *prev;

    if (++depth > NGX_HTTP_BYTEMARK_MAX_DEPTH) {
        return NULL;
    }

    if (++p < end && *p == '}') {
        return p + 1;
    }

    prev = NULL;
    plen = 0;

    for ( ;; ) {
        key = p + 1;
        p = ngx_http_bytemark_canon_string(p, end, 1);
        if (p == NULL || p == end || *p != ':') {
            return NULL;
        }

        klen = p - 1 - key;

        if (prev) {
            if (ngx_memcmp(prev, key, ngx_min(plen, klen)) > 0
                || (ngx_memcmp(prev, key, ngx_min(plen, klen)) == 0
                    && plen >= klen))
            {
                return NULL;
            }
        }

        prev = key;
        plen = klen;

        p = ngx_http_bytemark_canon_value(p + 1, end, depth);
        if (p == NULL || p == end) {
            return NULL;
        }

        if (*p == '}') {
            return p + 1;
        }

        if (*p++ != ',') {
            return NULL;
        }
    }
}


/* an array at p ('[') */

static const u_char *
ngx_http_bytemark_canon_array(const u_char *p, const u_char *end,
    ngx_uint_t depth)
{
    if (++depth > NGX_HTTP_BYTEMARK_MAX_DEPTH) {
        return NULL;
    }

    if (++p < end && *p == ']') {
        return p + 1;
    }

    for ( ;; ) {
        p = ngx_http_bytemark_canon_value(p, end, depth);
        if (p == NULL || p == end) {
            return NULL;
        }

        if (*p == ']') {
            return p + 1;
        }

        if (*p++ != ',') {
            return NULL;
        }
    }
}


/* a string with only the escapes jansson writes; a key with none at all */

static const u_char *
ngx_http_bytemark_canon_string(const u_char *p, const u_char *end,
    ngx_uint_t key)
{
    u_char  c, v;
    size_t  n;

    if (p == end || *p++ != '"') {
        return NULL;
    }

    while (p < end) {
        p += ngx_http_bytemark_plain_run(p, end - p);

        if (p == end) {
            return NULL;
        }

        c = *p;

        if (c == '"') {
            return p + 1;
        }

        if (c < 0x20) {
            return NULL;
        }

        if (c >= 0x80) {
            n = ngx_http_bytemark_utf8_seq(p, end - p);
            if (n == 0) {
                return NULL;
            }

            p += n;
            continue;
        }

        if (c != '\\') {
            p++;
            continue;
        }

        if (key || end - p < 2) {
            return NULL;
        }

        switch (p[1]) {

        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;

        case 'u':
            /* \u00XX, upper case, for the other control characters */
            if (end - p < 6 || p[2] != '0' || p[3] != '0'
                || (p[4] != '0' && p[4] != '1'))
            {
                return NULL;
            }

            if (p[5] >= '0' && p[5] <= '9') {
                v = p[5] - '0';

            } else if (p[5] >= 'A' && p[5] <= 'F') {
                v = p[5] - 'A' + 10;

            } else {
                return NULL;
            }

            v += (p[4] - '0') * 16;

            if (v == '\b' || v == '\f' || v == '\n' || v == '\r' || v == '\t')
            {
                return NULL;
            }

            p += 6;
            continue;

        default:
            return NULL;
        }
    }

    return NULL;
}


static const u_char *
ngx_http_bytemark_canon_number(const u_char *p, const u_char *end)
{
    char           buf[NGX_HTTP_BYTEMARK_REAL_LEN], *last;
    size_t         n;
    double         d;
    const u_char  *start, *digits;

    start = p;

    if (p < end && *p == '-') {
        p++;
    }

    digits = p;

    if (p == end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p == end || (*p != '.' && *p != 'e' && *p != 'E')) {
        /* an integer: "-0" becomes 0, longer ones may not fit */
        if (p - digits > 18 || (p - digits == 1 && *digits == '0'
                                && digits != start))
        {
            return NULL;
        }

        return p;
    }

    /* a real: the exact text "%.17g" gives for it, and not integral */

    if (*p == '.') {
        p++;

        if (p == end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '-' || *p == '+')) {
            p++;
        }

        if (p == end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    n = p - start;

    if (n >= NGX_HTTP_BYTEMARK_REAL_LEN) {
        return NULL;
    }

    ngx_memcpy(buf, start, n);
    buf[n] = '\0';

    d = strtod(buf, &last);

    if (last != buf + n || d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0
        || (d <= 9007199254740992.0 && d >= -9007199254740992.0
            && d == (double) (int64_t) d))
    {
        return NULL;
    }

    if (ngx_http_bytemark_real_text(d, buf) != n
        || ngx_memcmp(buf, start, n) != 0)
    {
        return NULL;
    }

    return p;
}
