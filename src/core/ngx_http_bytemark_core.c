
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * What every layer may use: clocks safe in threads, pass uuids (the client
 * sends them, ingest bodies carry them).
 */


#include "ngx_http_bytemark_core.h"


ngx_http_bytemark_versions_t  ngx_http_bytemark_versions = {
    "unknown", "unknown", JANSSON_VERSION
};


/* wall-clock ms; safe in threads, unlike nginx's cached time */

int64_t
ngx_http_bytemark_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* "2024-11-21T14:40:00.123Z"; safe in threads */

void
ngx_http_bytemark_iso_time(int64_t ms, char *buf)
{
    time_t     sec;
    int64_t    rem;
    struct tm  tm;

    sec = (time_t) (ms / 1000);
    rem = ms % 1000;

    if (rem < 0) {
        rem += 1000;
        sec--;
    }

    if (gmtime_r(&sec, &tm) == NULL) {
        ngx_memzero(&tm, sizeof(struct tm));
    }

    snprintf(buf, NGX_HTTP_BYTEMARK_ISO_LEN,
             "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int) rem);
}


/* 8-4-4-4-12 hex digits; written to out in lower case */

ngx_int_t
ngx_http_bytemark_parse_uuid(ngx_str_t *s, u_char *out)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len != NGX_HTTP_BYTEMARK_UUID_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_BYTEMARK_UUID_LEN; i++) {
        c = s->data[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return NGX_ERROR;
            }

            out[i] = c;
            continue;
        }

        if (c >= '0' && c <= '9') {
            out[i] = c;
            continue;
        }

        c |= 0x20;

        if (c >= 'a' && c <= 'f') {
            out[i] = c;
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}

