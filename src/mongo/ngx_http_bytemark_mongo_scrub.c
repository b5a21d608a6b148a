
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MongoDB URI's credentials never reach a log (SPEC 5).  The driver
 * repeats them in some of its messages ('Password "..." must not have
 * unescaped chars'), so every driver message that is logged passes through
 * ngx_http_bytemark_mongo_scrub() first: each occurrence of the URI's
 * userinfo, user name and password, as written and percent-decoded, and of
 * the password's pieces between the characters the driver splits at,
 * becomes "***"; so does any "//user:pass@" left in the text.
 *
 * The URIs are the one being parsed at configuration time, or the worker's
 * backends' after init_process (each is added before its pool starts
 * threads); the driver's threads only read them.
 */


#include "ngx_http_bytemark_mongo_private.h"


/* shorter pieces would scrub ordinary words out of every message */
#define NGX_HTTP_BYTEMARK_SCRUB_MIN    3
#define NGX_HTTP_BYTEMARK_SCRUB_MAX    24
#define NGX_HTTP_BYTEMARK_SCRUB_TEXT   "***"


typedef struct {
    ngx_str_t    secret[NGX_HTTP_BYTEMARK_SCRUB_MAX];
    ngx_uint_t   n;
    u_char      *decoded;
    u_char      *last;
} ngx_http_bytemark_scrub_t;


static void ngx_http_bytemark_scrub_add(ngx_http_bytemark_scrub_t *sc,
    u_char *p, size_t len, size_t min);
static void ngx_http_bytemark_scrub_userinfo(ngx_http_bytemark_scrub_t *sc,
    ngx_str_t *uri);
static ngx_uint_t ngx_http_bytemark_scrub_match(ngx_http_bytemark_scrub_t *sc,
    u_char *p, u_char *end, size_t *n);
static size_t ngx_http_bytemark_scrub_generic(u_char *p, u_char *end);
static void ngx_http_bytemark_scrub_uri(char *buf, size_t size,
    ngx_str_t *uri);


/* the backends' URIs (at most NGX_HTTP_BYTEMARK_MONGO_BACKENDS) */
static ngx_str_t   ngx_http_bytemark_mongo_secret_uri[
                                           NGX_HTTP_BYTEMARK_MONGO_BACKENDS];
static ngx_uint_t  ngx_http_bytemark_mongo_secret_uris;


void
ngx_http_bytemark_mongo_secrets(ngx_str_t *uri)
{
    ngx_uint_t  n;

    if (uri == NULL) {
        ngx_http_bytemark_mongo_secret_uris = 0;
        return;
    }

    n = ngx_http_bytemark_mongo_secret_uris;

    if (n == NGX_HTTP_BYTEMARK_MONGO_BACKENDS) {
        /* refused at configuration time (ngx_http_bytemark_upstream.c) */
        return;
    }

    /* the URI first, then the count the threads read */
    ngx_http_bytemark_mongo_secret_uri[n] = *uri;
    ngx_memory_barrier();
    ngx_http_bytemark_mongo_secret_uris = n + 1;
}


/* each backend's URI in a pass of its own: a pass holds so many secrets */

void
ngx_http_bytemark_mongo_scrub(char *buf, size_t size)
{
    ngx_uint_t  i, n;

    n = ngx_http_bytemark_mongo_secret_uris;

    if (n == 0) {
        ngx_http_bytemark_scrub_uri(buf, size, NULL);
        return;
    }

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_scrub_uri(buf, size,
                                    &ngx_http_bytemark_mongo_secret_uri[i]);
    }
}


static void
ngx_http_bytemark_scrub_uri(char *buf, size_t size, ngx_str_t *uri)
{
    u_char                     *p, *end, *o, *oend;
    char                       *text;
    size_t                      len, n;
    ngx_uint_t                  i;
    u_char                      decoded[1024], out[1024];
    ngx_http_bytemark_scrub_t   sc;

    sc.n = 0;
    sc.decoded = decoded;
    sc.last = decoded + sizeof(decoded);

    if (uri) {
        ngx_http_bytemark_scrub_userinfo(&sc, uri);
    }

    len = ngx_strlen(buf);
    p = (u_char *) buf;
    end = p + len;
    o = out;
    oend = out + ngx_min(sizeof(out), size) - 1;

    while (p < end && o < oend) {

        i = ngx_http_bytemark_scrub_match(&sc, p, end, &n);

        if (i < sc.n) {
            text = NGX_HTTP_BYTEMARK_SCRUB_TEXT;

        } else {
            /* "//user:pass@": the slashes and the "@" stay */
            text = "//" NGX_HTTP_BYTEMARK_SCRUB_TEXT "@";
            n = ngx_http_bytemark_scrub_generic(p, end);

            if (n == 0) {
                *o++ = *p++;
                continue;
            }
        }

        o = ngx_cpymem(o, text, ngx_min(ngx_strlen(text), (size_t) (oend - o)));
        p += n;
    }

    *o = '\0';

    ngx_memcpy(buf, out, o - out + 1);
}


/*
 * The userinfo is what lies between "://" and the last "@" before the
 * query; the driver itself splits at the first "@" and ":", so a password
 * with unescaped delimiters is scrubbed piece by piece too.
 */

static void
ngx_http_bytemark_scrub_userinfo(ngx_http_bytemark_scrub_t *sc, ngx_str_t *uri)
{
    u_char  *s, *end, *at, *last, *q, *p, *colon, *piece;

    if (uri->len == 0) {
        return;
    }

    end = uri->data + uri->len;

    s = ngx_strlcasestrn(uri->data, end, (u_char *) "://", 3 - 1);
    s = (s == NULL) ? uri->data : s + 3;

    q = ngx_strlchr(s, end, '?');
    at = NULL;
    last = NULL;

    for (p = s; p < end; p++) {
        if (*p == '@') {
            last = p;

            if (q == NULL || p < q) {
                at = p;
            }
        }
    }

    if (at == NULL) {
        at = last;
    }

    if (at == NULL) {
        return;
    }

    /* longest first: the whole userinfo before its parts */
    ngx_http_bytemark_scrub_add(sc, s, at - s, 1);

    colon = ngx_strlchr(s, at, ':');
    if (colon == NULL) {
        ngx_http_bytemark_scrub_add(sc, s, at - s, NGX_HTTP_BYTEMARK_SCRUB_MIN);
        return;
    }

    ngx_http_bytemark_scrub_add(sc, colon + 1, at - colon - 1, 1);
    ngx_http_bytemark_scrub_add(sc, s, colon - s, NGX_HTTP_BYTEMARK_SCRUB_MIN);

    piece = colon + 1;

    for (p = colon + 1; p <= at; p++) {
        if (p == at || *p == ':' || *p == '/' || *p == '@' || *p == '?') {
            ngx_http_bytemark_scrub_add(sc, piece, p - piece,
                                        NGX_HTTP_BYTEMARK_SCRUB_MIN);
            piece = p + 1;
        }
    }
}


/* the text as written and, when it has escapes, percent-decoded */

static void
ngx_http_bytemark_scrub_add(ngx_http_bytemark_scrub_t *sc, u_char *p,
    size_t len, size_t min)
{
    u_char  *d, *s;

    if (len < min || sc->n == NGX_HTTP_BYTEMARK_SCRUB_MAX) {
        return;
    }

    sc->secret[sc->n].data = p;
    sc->secret[sc->n++].len = len;

    if (ngx_strlchr(p, p + len, '%') == NULL
        || (size_t) (sc->last - sc->decoded) < len
        || sc->n == NGX_HTTP_BYTEMARK_SCRUB_MAX)
    {
        return;
    }

    d = sc->decoded;
    s = p;
    ngx_unescape_uri(&d, &s, len, 0);

    if ((size_t) (d - sc->decoded) >= min) {
        sc->secret[sc->n].data = sc->decoded;
        sc->secret[sc->n++].len = d - sc->decoded;
        sc->decoded = d;
    }
}


/*
 * The first secret found at p, the longest of those added first; at the
 * end of a message cut short, the beginning of one counts too.
 */

static ngx_uint_t
ngx_http_bytemark_scrub_match(ngx_http_bytemark_scrub_t *sc, u_char *p,
    u_char *end, size_t *n)
{
    size_t      len;
    ngx_uint_t  i;

    for (i = 0; i < sc->n; i++) {
        len = ngx_min(sc->secret[i].len, (size_t) (end - p));

        if ((len == sc->secret[i].len || len >= NGX_HTTP_BYTEMARK_SCRUB_MIN)
            && ngx_memcmp(p, sc->secret[i].data, len) == 0)
        {
            *n = len;
            return i;
        }
    }

    return sc->n;
}


/* the length of "//userinfo@" at p, 0 if there is none */

static size_t
ngx_http_bytemark_scrub_generic(u_char *p, u_char *end)
{
    u_char  *s;

    if (end - p < 4 || p[0] != '/' || p[1] != '/') {
        return 0;
    }

    for (s = p + 2; s < end; s++) {
        if (*s == '@') {
            return (s > p + 2) ? (size_t) (s - p + 1) : 0;
        }

        if (*s <= ' ' || *s == '/' || *s == '"' || *s == '\'') {
            return 0;
        }
    }

    return 0;
}


/*
 * The driver logs from its monitor threads too; its warnings and errors go
 * to nginx's error log (as nginx's own thread code logs), the chatter below
 * that is dropped.
 */

void
ngx_http_bytemark_mongo_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data)
{
    char        buf[1024], *p;
    ngx_uint_t  nlevel;

    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        nlevel = NGX_LOG_ERR;
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        nlevel = NGX_LOG_WARN;
        break;
    default:
        return;
    }

    /* one line per message, as in ngx_http_bytemark_mongo_cause() */
    for (p = buf; *message && p < buf + sizeof(buf) - 1; p++, message++) {
        *p = ((u_char) *message < 0x20 || *message == 0x7f) ? ' ' : *message;
    }

    *p = '\0';

    ngx_http_bytemark_mongo_scrub(buf, sizeof(buf));

    ngx_log_error(nlevel, ngx_cycle->log, 0, "bytemark: mongoc %s: %s",
                  domain, buf);
}
