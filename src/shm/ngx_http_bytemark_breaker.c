
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * A circuit breaker per backend (MongoDB, and each MySQL server): after
 * "bytemark_breaker failures=" (5) consecutive failures that cost time
 * (budgets spent, connections that hang, calls stuck in a driver) the
 * backend is skipped for "open=" (2s), so the fallback answers at once instead
 * of every request paying the backend's timeout.  Then one call at a time is
 * let through as a probe: its success closes the breaker, its failure opens
 * it again.
 *
 * A failure that cost next to nothing (a refused connection while a server
 * restarts) neither opens nor closes the breaker: there is no timeout to
 * save, and an open breaker would only delay the recovery.
 *
 * The state lives in the shared zone, so all workers agree and each change
 * of state is logged once, by whoever made it.  Everything is atomics:
 * MongoDB's pool threads update it too.
 */


#include "ngx_http_bytemark_shm.h"


/* failures cheaper than this are not the breaker's business */
#define NGX_HTTP_BYTEMARK_BREAKER_SLOW_MS   100

/* a probe that never reported (its worker died) stops blocking after this */
#define NGX_HTTP_BYTEMARK_BREAKER_PROBE_MS  10000


static ngx_http_bytemark_breaker_t *ngx_http_bytemark_breaker(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t backend);
static void ngx_http_bytemark_breaker_name(ngx_uint_t backend, char *buf,
    size_t size);


/* may a call go to this backend now?  In the half-open state, one may */

ngx_int_t
ngx_http_bytemark_breaker_allow(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend)
{
    int64_t                       now;
    ngx_atomic_uint_t             open_until, probe;
    ngx_http_bytemark_breaker_t  *b;

    b = ngx_http_bytemark_breaker(bmcf, backend);
    if (b == NULL) {
        return 1;
    }

    open_until = b->open_until;

    if (open_until == 0) {
        return 1;
    }

    now = ngx_http_bytemark_now_ms();

    if (now < (int64_t) open_until) {
        return 0;
    }

    probe = b->probe_at;

    if (probe != 0
        && now - (int64_t) probe < NGX_HTTP_BYTEMARK_BREAKER_PROBE_MS)
    {
        return 0;
    }

    return ngx_atomic_cmp_set(&b->probe_at, probe, (ngx_atomic_uint_t) now);
}


/* open and not yet due for a probe: for work that can simply be skipped */

ngx_int_t
ngx_http_bytemark_breaker_is_open(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend)
{
    ngx_http_bytemark_breaker_t  *b;

    b = ngx_http_bytemark_breaker(bmcf, backend);

    return b && b->open_until
           && ngx_http_bytemark_now_ms() < (int64_t) b->open_until;
}


/* closed: neither open nor letting a probe through */

ngx_int_t
ngx_http_bytemark_breaker_closed(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend)
{
    ngx_http_bytemark_breaker_t  *b;

    b = ngx_http_bytemark_breaker(bmcf, backend);

    return b == NULL || b->open_until == 0;
}


void
ngx_http_bytemark_breaker_result(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend, ngx_uint_t ok, int64_t cost)
{
    char                          name[32];
    int64_t                       now;
    ngx_atomic_uint_t             open_until, failures;
    ngx_http_bytemark_breaker_t  *b;

    b = ngx_http_bytemark_breaker(bmcf, backend);
    if (b == NULL) {
        return;
    }

    open_until = b->open_until;

    if (ok) {
        b->failures = 0;

        if (open_until
            && ngx_atomic_cmp_set(&b->open_until, open_until, 0))
        {
            b->probe_at = 0;
            ngx_http_bytemark_breaker_name(backend, name, sizeof(name));
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "bytemark: circuit breaker for %s%s%V%s closed: "
                          "the backend answers again", name,
                          bmcf->name.len ? " of bytemark_upstream \"" : "",
                          &bmcf->name, bmcf->name.len ? "\"" : "");
        }

        return;
    }

    if (cost < NGX_HTTP_BYTEMARK_BREAKER_SLOW_MS) {
        return;
    }

    failures = ngx_atomic_fetch_add(&b->failures, 1) + 1;
    now = ngx_http_bytemark_now_ms();

    if (open_until) {
        /*
         * A failed probe, or a failure once the interval is over of work
         * that only skips an open breaker and claims no probe (fills,
         * ingest cache updates): open for another interval (logged once,
         * at open).
         */
        if ((b->probe_at || now >= (int64_t) open_until)
            && ngx_atomic_cmp_set(&b->open_until, open_until,
                          (ngx_atomic_uint_t) (now
                                               + bmcf->breaker_open)))
        {
            b->probe_at = 0;
        }

        return;
    }

    if (failures >= bmcf->breaker_failures
        && ngx_atomic_cmp_set(&b->open_until, 0,
                              (ngx_atomic_uint_t) (now + bmcf->breaker_open)))
    {
        ngx_http_bytemark_breaker_name(backend, name, sizeof(name));
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: circuit breaker for %s%s%V%s opened after "
                      "%uA consecutive failures; calls skip it, with a "
                      "probe every %M ms", name,
                      bmcf->name.len ? " of bytemark_upstream \"" : "",
                      &bmcf->name, bmcf->name.len ? "\"" : "",
                      failures, bmcf->breaker_open);
    }
}


static ngx_http_bytemark_breaker_t *
ngx_http_bytemark_breaker(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend)
{
    if (bmcf->shm_zone == NULL || bmcf->shm_zone->data == NULL
        || backend >= NGX_HTTP_BYTEMARK_BREAKERS)
    {
        return NULL;
    }

    return ngx_http_bytemark_shm_breakers(bmcf) + backend;
}


static void
ngx_http_bytemark_breaker_name(ngx_uint_t backend, char *buf, size_t size)
{
    if (backend == NGX_HTTP_BYTEMARK_BREAKER_MONGO) {
        snprintf(buf, size, "mongo");

    } else {
        snprintf(buf, size, "mysql server #%u",
                 (unsigned) (backend - NGX_HTTP_BYTEMARK_BREAKER_MYSQL + 1));
    }
}
