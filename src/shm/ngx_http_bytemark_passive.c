
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Passive health of each MySQL server, as nginx's upstream servers have
 * it: "max_fails=" failures within "fail_timeout=" take a server out of
 * rotation for "fail_timeout"; then one call probes it: its success puts
 * the server back, its failure takes it out for another "fail_timeout".
 *
 * Unlike the circuit breaker (breaker.c), every failure of the server
 * counts, a refused connection too, which costs nothing but would
 * otherwise be paid by every request, each logging it.  The state sits in
 * the server's breaker slot of the shared zone, so all workers agree, and
 * each change is logged once, by the worker that made it: "down" (warn)
 * and "back" (notice).  A server without max_fails= is always up.
 */


#include "ngx_http_bytemark_shm.h"


/* a probe that never reported (its worker died) stops blocking after this */
#define NGX_HTTP_BYTEMARK_HEALTH_PROBE_MS  10000


static ngx_http_bytemark_breaker_t *ngx_http_bytemark_health(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t slot,
    ngx_http_bytemark_mysql_server_t **srv);


ngx_uint_t
ngx_http_bytemark_health_state(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot)
{
    ngx_atomic_uint_t                  down;
    ngx_http_bytemark_breaker_t       *h;
    ngx_http_bytemark_mysql_server_t  *srv;

    h = ngx_http_bytemark_health(bmcf, slot, &srv);
    if (h == NULL) {
        return NGX_HTTP_BYTEMARK_HEALTH_UP;
    }

    down = h->down_until;

    if (down == 0) {
        return NGX_HTTP_BYTEMARK_HEALTH_UP;
    }

    return (ngx_http_bytemark_now_ms() < (int64_t) down)
           ? NGX_HTTP_BYTEMARK_HEALTH_DOWN : NGX_HTTP_BYTEMARK_HEALTH_PROBE;
}


/*
 * May a call go to the server now?  Up: yes.  Down: no, until its
 * fail_timeout is over; then one call may, as the probe (claim: this call
 * is it; else only whether one could be).
 */

ngx_int_t
ngx_http_bytemark_health_allow(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t claim)
{
    int64_t                            now;
    ngx_atomic_uint_t                  down, probe;
    ngx_http_bytemark_breaker_t       *h;
    ngx_http_bytemark_mysql_server_t  *srv;

    h = ngx_http_bytemark_health(bmcf, slot, &srv);
    if (h == NULL) {
        return 1;
    }

    down = h->down_until;

    if (down == 0) {
        return 1;
    }

    now = ngx_http_bytemark_now_ms();

    if (now < (int64_t) down) {
        return 0;
    }

    probe = h->down_probe;

    if (probe != 0
        && now - (int64_t) probe < NGX_HTTP_BYTEMARK_HEALTH_PROBE_MS)
    {
        return 0;
    }

    if (!claim) {
        return 1;
    }

    if (!ngx_atomic_cmp_set(&h->down_probe, probe, (ngx_atomic_uint_t) now)) {
        return 0;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server %V probed", &srv->name);

    return 1;
}


/* a call's outcome on the server: ok, or a failure and its cause */

void
ngx_http_bytemark_health_result(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t ok, const char *cause)
{
    int64_t                            now;
    ngx_atomic_uint_t                  down, window, fails;
    ngx_http_bytemark_breaker_t       *h;
    ngx_http_bytemark_mysql_server_t  *srv;

    h = ngx_http_bytemark_health(bmcf, slot, &srv);
    if (h == NULL) {
        return;
    }

    down = h->down_until;
    now = ngx_http_bytemark_now_ms();

    if (ok) {
        if (down && ngx_atomic_cmp_set(&h->down_until, down, 0)) {
            h->fails = 0;
            h->window = 0;
            h->down_probe = 0;

            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "bytemark: mysql server %V%s%V%s is back",
                          &srv->name,
                          bmcf->name.len ? " of bytemark_upstream \"" : "",
                          &bmcf->name, bmcf->name.len ? "\"" : "");
        }

        return;
    }

    if (down) {
        /* a failed probe, or one that was in flight: out for another while */
        if (now >= (int64_t) down
            && ngx_atomic_cmp_set(&h->down_until, down,
                                  (ngx_atomic_uint_t) (now
                                                       + srv->fail_timeout)))
        {
            h->down_probe = 0;

            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "bytemark: mysql server %V still down",
                           &srv->name);
        }

        return;
    }

    /* failures count within fail_timeout of the first one, as nginx's */
    window = h->window;

    if (window == 0 || now - (int64_t) window > (int64_t) srv->fail_timeout) {
        if (ngx_atomic_cmp_set(&h->window, window, (ngx_atomic_uint_t) now)) {
            h->fails = 0;
        }
    }

    fails = ngx_atomic_fetch_add(&h->fails, 1) + 1;

    if (fails >= srv->max_fails
        && ngx_atomic_cmp_set(&h->down_until, 0,
                              (ngx_atomic_uint_t) (now + srv->fail_timeout)))
    {
        h->down_probe = 0;

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: mysql server %V%s%V%s is down after %uA "
                      "failures in %M%s: %s; calls skip it for as long, "
                      "then one probes it", &srv->name,
                      bmcf->name.len ? " of bytemark_upstream \"" : "",
                      &bmcf->name, bmcf->name.len ? "\"" : "", fails,
                      srv->fail_timeout % 1000 ? srv->fail_timeout
                                               : srv->fail_timeout / 1000,
                      srv->fail_timeout % 1000 ? "ms" : "s",
                      (cause && cause[0]) ? cause : "unknown error");
    }
}


/*
 * The call layer's breaker report (the observer of metrics.c): the
 * breaker hears it, and a MySQL server's health too, for the failures the
 * call layer sees (a spent budget, calls stuck on the server).
 */

void
ngx_http_bytemark_health_observed(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t ok, int64_t cost)
{
    const char  *cause;

    ngx_http_bytemark_breaker_result(bmcf, slot, ok, cost);

    if (slot >= NGX_HTTP_BYTEMARK_BREAKER_MYSQL) {
        cause = (cost == NGX_HTTP_BYTEMARK_CALL_STUCK_COST)
                ? "calls stuck on the server" : "no answer within the budget";

        ngx_http_bytemark_health_result(bmcf, slot, ok, cause);
    }
}


/* the slot's state and its server, or NULL when health is off for it */

static ngx_http_bytemark_breaker_t *
ngx_http_bytemark_health(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_http_bytemark_mysql_server_t **srv)
{
    ngx_uint_t                         i;
    ngx_http_bytemark_mysql_server_t  *s;

    if (slot < NGX_HTTP_BYTEMARK_BREAKER_MYSQL
        || slot >= NGX_HTTP_BYTEMARK_BREAKERS
        || bmcf->mysql_servers == NULL
        || bmcf->shm_zone == NULL || bmcf->shm_zone->data == NULL)
    {
        return NULL;
    }

    i = slot - NGX_HTTP_BYTEMARK_BREAKER_MYSQL;

    if (i >= bmcf->mysql_servers->nelts) {
        return NULL;
    }

    s = (ngx_http_bytemark_mysql_server_t *) bmcf->mysql_servers->elts + i;

    if (s->max_fails == 0) {
        return NULL;
    }

    *srv = s;

    return ngx_http_bytemark_shm_breakers(bmcf) + slot;
}
