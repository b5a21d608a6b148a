
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The canonical JSON writer: the text a response carries, written once,
 * straight from the cache document's BSON (in MongoDB's pool thread) or
 * from MySQL rows (on the event loop, as they are fetched).  No jansson
 * tree is built on the read path and nothing is serialized twice.
 *
 * Canonical means byte for byte what jansson's json_dumps() with
 * JSON_COMPACT | JSON_SORT_KEYS writes for the same value after the
 * JavaScript-style number normalization (json.c): keys sorted bytewise,
 * the last of duplicate keys kept, "\uXXXX" (upper case) for the control
 * characters without a short escape, reals as "%.17g".  Ingest writes and
 * hashes with jansson, so a pass has the same bytes, and the same ETag,
 * whichever source answers.  fuzz/ checks the equivalence.
 */


#include "ngx_http_bytemark_render.h"


static ssize_t ngx_http_bytemark_string_len(const u_char *s, size_t len);


/* growable malloc()ed text: MongoDB's pool threads have no nginx pool */

ngx_int_t
ngx_http_bytemark_jbuf_reserve(ngx_http_bytemark_jbuf_t *b, size_t n)
{
    size_t   size;
    u_char  *p;

    if (b->len + n <= b->size) {
        return NGX_OK;
    }

    size = b->size ? b->size : 1024;

    while (size < b->len + n) {
        size *= 2;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->data = p;
    b->size = size;

    return NGX_OK;
}


ngx_int_t
ngx_http_bytemark_jbuf_add(ngx_http_bytemark_jbuf_t *b, const void *data,
    size_t n)
{
    if (ngx_http_bytemark_jbuf_reserve(b, n) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(b->data + b->len, data, n);
    b->len += n;

    return NGX_OK;
}


void
ngx_http_bytemark_jbuf_free(ngx_http_bytemark_jbuf_t *b)
{
    free(b->data);
    ngx_memzero(b, sizeof(ngx_http_bytemark_jbuf_t));
}


ngx_int_t
ngx_http_bytemark_render_int(ngx_http_bytemark_jbuf_t *b, int64_t n)
{
    u_char    digits[NGX_INT64_LEN], *d, *p;
    uint64_t  u;

    if (ngx_http_bytemark_jbuf_reserve(b, NGX_INT64_LEN + 1) != NGX_OK) {
        return NGX_ERROR;
    }

    /* unsigned: INT64_MIN has no positive counterpart */
    u = (n < 0) ? (uint64_t) 0 - (uint64_t) n : (uint64_t) n;

    d = digits + NGX_INT64_LEN;

    do {
        *--d = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    p = b->data + b->len;

    if (n < 0) {
        *p++ = '-';
    }

    p = ngx_cpymem(p, d, digits + NGX_INT64_LEN - d);
    b->len = p - b->data;

    return NGX_OK;
}


/*
 * A JSON string.  NGX_DECLINED when s is not valid UTF-8 (by jansson's
 * rules: no overlong forms, no surrogates, nothing past U+10FFFF).
 */

ngx_int_t
ngx_http_bytemark_render_string(ngx_http_bytemark_jbuf_t *b, const u_char *s,
    size_t len)
{
    u_char         c, *p;
    ssize_t        n;
    const u_char  *end;

    static u_char  hex[] = "0123456789ABCDEF";

    /* most strings need no escape: one scan, one copy */
    if (ngx_http_bytemark_plain_run(s, len) == len) {
        if (ngx_http_bytemark_jbuf_reserve(b, len + 2) != NGX_OK) {
            return NGX_ERROR;
        }

        p = b->data + b->len;
        *p++ = '"';
        p = ngx_cpymem(p, s, len);
        *p++ = '"';
        b->len = p - b->data;

        return NGX_OK;
    }

    n = ngx_http_bytemark_string_len(s, len);
    if (n < 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_bytemark_jbuf_reserve(b, n) != NGX_OK) {
        return NGX_ERROR;
    }

    p = b->data + b->len;
    *p++ = '"';

    for (end = s + len; s < end; s++) {
        c = *s;

        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = c;
            continue;
        }

        *p++ = '\\';

        switch (c) {
        case '"':  *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\b': *p++ = 'b'; break;
        case '\f': *p++ = 'f'; break;
        case '\n': *p++ = 'n'; break;
        case '\r': *p++ = 'r'; break;
        case '\t': *p++ = 't'; break;
        default:
            *p++ = 'u'; *p++ = '0'; *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    *p++ = '"';
    b->len = p - b->data;

    return NGX_OK;
}


/* whether s is UTF-8 that render_string() writes (not NGX_DECLINED) */

ngx_uint_t
ngx_http_bytemark_utf8_valid(const u_char *s, size_t len)
{
    return ngx_http_bytemark_string_len(s, len) >= 0;
}


/*
 * The length of the leading run of bytes written as they are: printable
 * ASCII but '"' and '\\'.  Eight bytes at a time: each test sets a byte's
 * high bit when that byte may stop the run (a false alarm only follows a
 * true one), and the last bytes are looked at one by one.
 */

size_t
ngx_http_bytemark_plain_run(const u_char *s, size_t len)
{
    size_t    i;
    uint64_t  x, q, bs;

#define NGX_HTTP_BYTEMARK_ONES   0x0101010101010101ULL
#define NGX_HTTP_BYTEMARK_HIGHS  0x8080808080808080ULL

    for (i = 0; i + 8 <= len; i += 8) {
        ngx_memcpy(&x, s + i, 8);

        q = x ^ (NGX_HTTP_BYTEMARK_ONES * '"');
        bs = x ^ (NGX_HTTP_BYTEMARK_ONES * '\\');

        if ((((x - NGX_HTTP_BYTEMARK_ONES * 0x20) & ~x)
             | ((q - NGX_HTTP_BYTEMARK_ONES) & ~q)
             | ((bs - NGX_HTTP_BYTEMARK_ONES) & ~bs)
             | x)
            & NGX_HTTP_BYTEMARK_HIGHS)
        {
            break;
        }
    }

    while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"'
           && s[i] != '\\')
    {
        i++;
    }

    return i;
}


/* the escaped length, quotes included, or -1 for invalid UTF-8 */

static ssize_t
ngx_http_bytemark_string_len(const u_char *s, size_t len)
{
    size_t  i, n, out;
    u_char  c;

    out = 2;

    for (i = 0; i < len; /* void */) {
        c = s[i];

        if (c < 0x80) {
            if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n'
                || c == '\r' || c == '\t')
            {
                out += 2;

            } else {
                out += (c < 0x20) ? 6 : 1;
            }

            i++;
            continue;
        }

        n = ngx_http_bytemark_utf8_seq(s + i, len - i);
        if (n == 0) {
            return -1;
        }

        out += n;
        i += n;
    }

    return out;
}


/* the length of the UTF-8 sequence at s, 0 when it is not valid */

size_t
ngx_http_bytemark_utf8_seq(const u_char *s, size_t len)
{
    size_t    n, i;
    uint32_t  v;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        v = s[0] & 0x1f;

    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        v = s[0] & 0x0f;

    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        v = s[0] & 0x07;

    } else {
        return 0;
    }

    if (n > len) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }

        v = (v << 6) | (s[i] & 0x3f);
    }

    if (v > 0x10ffff
        || (v >= 0xd800 && v <= 0xdfff)
        || (n == 3 && v < 0x800)
        || (n == 4 && v < 0x10000))
    {
        return 0;
    }

    return n;
}


/*
 * Numbers as JavaScript has them: a double that holds an integer (2.0,
 * -0.0, Date.now() from a JavaScript client) is that integer; JSON has no
 * NaN or infinity, so those are null.
 */

ngx_int_t
ngx_http_bytemark_render_double(ngx_http_bytemark_jbuf_t *b, double d)
{
    char  buf[NGX_HTTP_BYTEMARK_REAL_LEN];

    if (d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0) {
        return ngx_http_bytemark_jbuf_add(b, "null", 4);
    }

    /* in range first: casting a larger double to int64_t is undefined */
    if (d <= 9007199254740992.0 && d >= -9007199254740992.0
        && d == (double) (int64_t) d)
    {
        return ngx_http_bytemark_render_int(b, (int64_t) d);
    }

    return ngx_http_bytemark_jbuf_add(b, buf,
                                      ngx_http_bytemark_real_text(d, buf));
}


/* jansson's jsonp_dtostr(): "%.17g", ".0" if needed, no "+" or leading
 * zeros in the exponent */

size_t
ngx_http_bytemark_real_text(double d, char *buf)
{
    int    n;
    char  *e, *start, *digits;

    n = snprintf(buf, NGX_HTTP_BYTEMARK_REAL_LEN - 3, "%.17g", d);

    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        buf[n++] = '.';
        buf[n++] = '0';
        buf[n] = '\0';
    }

    e = strchr(buf, 'e');

    if (e) {
        start = e + 1;
        digits = start + 1;

        if (*start == '-') {
            start++;
        }

        while (*digits == '0') {
            digits++;
        }

        if (digits != start) {
            memmove(start, digits, buf + n + 1 - digits);
            n -= digits - start;
        }
    }

    return n;
}


/* a new item, its separator written: the caller writes the object */

ngx_http_bytemark_item_t *
ngx_http_bytemark_passes_begin(ngx_http_bytemark_passes_t *list)
{
    ngx_uint_t                 n;
    ngx_http_bytemark_item_t  *items;

    if (list->n == list->nalloc) {
        n = list->nalloc ? 2 * list->nalloc : 8;

        items = realloc(list->items, n * sizeof(ngx_http_bytemark_item_t));
        if (items == NULL) {
            return NULL;
        }

        list->items = items;
        list->nalloc = n;
    }

    if (ngx_http_bytemark_jbuf_char(&list->text, list->n ? ',' : '[')
        != NGX_OK)
    {
        return NULL;
    }

    ngx_memzero(&list->items[list->n], sizeof(ngx_http_bytemark_item_t));
    list->items[list->n].start = list->text.len;

    return &list->items[list->n];
}


void
ngx_http_bytemark_passes_end(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_item_t *item)
{
    item->len = list->text.len - item->start;
    list->n++;
}


/* after the last item: the closing bracket */

ngx_int_t
ngx_http_bytemark_passes_close(ngx_http_bytemark_passes_t *list)
{
    if (list->n == 0) {
        return NGX_OK;
    }

    return ngx_http_bytemark_jbuf_char(&list->text, ']');
}


/* the array's text, "[...]"; an empty or absent list is "[]" */

void
ngx_http_bytemark_passes_text(ngx_http_bytemark_passes_t *list,
    ngx_str_t *text)
{
    if (list == NULL || list->n == 0) {
        ngx_str_set(text, "[]");
        return;
    }

    text->data = list->text.data;
    text->len = list->text.len;
}


void
ngx_http_bytemark_passes_free(ngx_http_bytemark_passes_t *list)
{
    ngx_http_bytemark_jbuf_free(&list->text);
    free(list->items);
    ngx_memzero(list, sizeof(ngx_http_bytemark_passes_t));
}
