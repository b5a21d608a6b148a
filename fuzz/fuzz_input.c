
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Target fuzz_input: the client input of src/http/ngx_http_bytemark_input.c.
 *
 * Every input goes through all four parsers, each compared with a reference
 * written straight from SPEC 3 / 3.6:
 *   - the bytes as a user id: ngx_http_bytemark_parse_user_id();
 *   - the bytes as a pass uuid: ngx_http_bytemark_parse_uuid();
 *   - the bytes as a percent-encoded string:
 *     ngx_http_bytemark_percent_decode();
 *   - the bytes as a query string (r->args of a minimal request with a
 *     pool): ngx_http_bytemark_parse_filter(), i.e. ngx_http_arg() and the
 *     status/version rules.
 */

#include "fuzz.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    bytemark_fuzz_init();
    return 0;
}


static int
hexval(u_char c)
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

    return -1;
}


/* SPEC 3.6: "%XX" with two hex digits; "+" is not a space; else an error */

static int
ref_decode(const u_char *s, size_t n, u_char *out, size_t *outlen)
{
    size_t  i, k;

    for (i = 0, k = 0; i < n; ) {
        if (s[i] != '%') {
            out[k++] = s[i++];
            continue;
        }

        if (i + 2 >= n) {
            return -1;
        }

        if (hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
            return -1;
        }

        out[k++] = (u_char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
        i += 3;
    }

    *outlen = k;
    return 0;
}


static void
check_user_id(const u_char *s, size_t n)
{
    size_t      i;
    uint64_t    v, got;
    ngx_str_t   str;
    ngx_int_t   rc;
    int         valid;

    /* SPEC 3: ASCII digits only, no sign, no leading zero, 1 .. 2^53-1 */
    valid = (n >= 1 && n <= 16 && s[0] != '0');
    v = 0;

    for (i = 0; valid && i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            valid = 0;
            break;
        }

        v = v * 10 + (s[i] - '0');
    }

    if (valid && (v < 1 || v > 9007199254740991ULL)) {
        valid = 0;
    }

    str.data = (u_char *) s;
    str.len = n;
    got = 0;
    rc = ngx_http_bytemark_parse_user_id(&str, &got);

    FUZZ_CHECK((rc == NGX_OK) == valid, "user id \"%.*s\": rc %d, expected "
               "%s", (int) n, s, (int) rc, valid ? "valid" : "invalid");

    if (valid) {
        FUZZ_CHECK(got == v, "user id value %llu, expected %llu",
                   (unsigned long long) got, (unsigned long long) v);
    }
}


static void
check_uuid(const u_char *s, size_t n)
{
    size_t      i;
    u_char      out[NGX_HTTP_BYTEMARK_UUID_LEN], c;
    ngx_str_t   str;
    ngx_int_t   rc;
    int         valid;

    valid = (n == NGX_HTTP_BYTEMARK_UUID_LEN);

    for (i = 0; valid && i < n; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            valid = (s[i] == '-');
        } else {
            valid = (hexval(s[i]) >= 0);
        }
    }

    str.data = (u_char *) s;
    str.len = n;
    rc = ngx_http_bytemark_parse_uuid(&str, out);

    FUZZ_CHECK((rc == NGX_OK) == valid, "uuid \"%.*s\": rc %d", (int) n, s,
               (int) rc);

    if (valid) {
        for (i = 0; i < n; i++) {
            c = s[i];
            if (c >= 'A' && c <= 'F') {
                c |= 0x20;
            }

            FUZZ_CHECK(out[i] == c, "uuid byte %zu is 0x%02x, expected 0x%02x",
                       i, out[i], c);
        }
    }
}


static void
check_decode(const u_char *s, size_t n)
{
    int         ok;
    u_char     *dst, *ref;
    size_t      len, rlen;
    ngx_str_t   str;
    ngx_int_t   rc;

    /* exactly the documented size: "dst must hold src->len bytes" */
    dst = malloc(n ? n : 1);
    ref = malloc(n ? n : 1);

    str.data = (u_char *) s;
    str.len = n;
    len = (size_t) -1;
    rc = ngx_http_bytemark_percent_decode(&str, dst, &len);
    ok = ref_decode(s, n, ref, &rlen);

    FUZZ_CHECK((rc == NGX_OK) == (ok == 0), "percent_decode of \"%.*s\": "
               "rc %d", (int) n, s, (int) rc);

    if (ok == 0) {
        FUZZ_CHECK(len == rlen && memcmp(dst, ref, len) == 0,
                   "percent_decode of \"%.*s\" differs", (int) n, s);
    }

    free(dst);
    free(ref);
}


/* the reference of SPEC 3.1 / 3.6 for one argument value */

static int
ref_version(ngx_str_t *arg, ngx_uint_t *versions)
{
    u_char  buf[4096];
    size_t  len;

    if (arg->len > sizeof(buf) || ref_decode(arg->data, arg->len, buf, &len)) {
        return -1;
    }

    if (len == 1 && buf[0] == '3') {
        *versions = NGX_HTTP_BYTEMARK_V3;
        return 0;
    }

    if (len == 1 && buf[0] == '4') {
        *versions = NGX_HTTP_BYTEMARK_V4;
        return 0;
    }

    if (len == 3 && memcmp(buf, "all", 3) == 0) {
        *versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;
        return 0;
    }

    return -1;
}


static int
ref_statuses(ngx_str_t *arg, ngx_array_t *got)
{
    u_char      *p, *end, *comma, buf[4096];
    size_t       len, i;
    ngx_str_t   *s;
    ngx_uint_t   k;

    p = arg->data;
    end = p + arg->len;
    k = 0;

    for ( ;; ) {
        comma = memchr(p, ',', end - p);
        len = (comma ? comma : end) - p;

        if (len > sizeof(buf) || ref_decode(p, len, buf, &len)) {
            return -1;
        }

        if (len == 0 || len > NGX_HTTP_BYTEMARK_STATUS_MAX) {
            return -1;
        }

        for (i = 0; i < len; i++) {
            if (buf[i] < 0x20 || buf[i] == 0x7f) {
                return -1;
            }
        }

        if (got) {
            FUZZ_CHECK(k < got->nelts, "fewer statuses than elements");
            s = (ngx_str_t *) got->elts + k;
            FUZZ_CHECK(s->len == len && memcmp(s->data, buf, len) == 0,
                       "status %u differs", (unsigned) k);
        }

        k++;

        if (comma == NULL) {
            break;
        }

        p = comma + 1;
    }

    if (got) {
        FUZZ_CHECK(k == got->nelts, "%u statuses, expected %u",
                   (unsigned) got->nelts, (unsigned) k);
    }

    return 0;
}


static void
check_filter(const u_char *s, size_t n)
{
    int                          expect;
    u_char                      *args;
    ngx_str_t                    arg;
    ngx_int_t                    rc;
    ngx_uint_t                   versions;
    ngx_pool_t                  *pool;
    ngx_http_request_t          *r;
    ngx_http_bytemark_filter_t   f;

    pool = ngx_create_pool(1024, &bytemark_fuzz_log);
    FUZZ_CHECK(pool != NULL, "out of memory");

    r = calloc(1, sizeof(ngx_http_request_t));
    args = malloc(n ? n : 1);
    memcpy(args, s, n);

    r->pool = pool;
    r->args.data = args;
    r->args.len = n;

    f.statuses = (ngx_array_t *) 1;
    f.versions = 0;

    rc = ngx_http_bytemark_parse_filter(r, &f);

    FUZZ_CHECK(rc == NGX_OK || rc == NGX_DECLINED, "parse_filter rc %d",
               (int) rc);

    /* the reference, with nginx's own argument lookup */
    expect = 0;
    versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;

    if (ngx_http_arg(r, (u_char *) "version", 7, &arg) == NGX_OK
        && ref_version(&arg, &versions) != 0)
    {
        expect = -1;
    }

    if (expect == 0 && ngx_http_arg(r, (u_char *) "status", 6, &arg) == NGX_OK
        && ref_statuses(&arg, NULL) != 0)
    {
        expect = -1;
    }

    FUZZ_CHECK((rc == NGX_OK) == (expect == 0), "query \"%.*s\": rc %d, SPEC "
               "says %s", (int) n, s, (int) rc,
               expect == 0 ? "valid" : "400 invalid_argument");

    if (rc == NGX_OK) {
        FUZZ_CHECK(f.versions == versions, "versions %u, expected %u",
                   (unsigned) f.versions, (unsigned) versions);

        if (ngx_http_arg(r, (u_char *) "status", 6, &arg) == NGX_OK) {
            FUZZ_CHECK(f.statuses != NULL, "no statuses");
            (void) ref_statuses(&arg, f.statuses);

        } else {
            FUZZ_CHECK(f.statuses == NULL, "statuses without a status "
                       "argument");
        }
    }

    free(args);
    free(r);
    ngx_destroy_pool(pool);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  *copy;

    bytemark_fuzz_init();

    /* an exact-size copy: any read past the end is an ASan report */
    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    check_user_id(copy, size);
    check_uuid(copy, size);
    check_decode(copy, size);
    check_filter(copy, size);

    free(copy);

    return 0;
}
