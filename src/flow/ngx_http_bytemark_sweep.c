
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The periodic sweep of the cache (bytemark_cache_cleanup interval=...
 * max_age=...): delete cache entries whose timestamp is older than
 * max_age.  Every worker looks at a timer; the one that takes the lock in
 * shared memory (ngx_http_bytemark_shm.c) runs the deleteMany on the
 * thread pool.  The lock and the time of the last run live in a zone that
 * survives reloads, so old and new workers never run it twice in parallel
 * nor more often than the interval.  A run that hangs (a silent MongoDB, a
 * socketTimeoutMS raised in the URI) holds the lock no longer than a few
 * driver limits: then another run may take it over.
 */


#include "ngx_http_bytemark_flow.h"


/* how often a worker looks, whatever the interval */
#define NGX_HTTP_BYTEMARK_SWEEP_TICK   1000
/* a run older than this many driver limits is taken over */
#define NGX_HTTP_BYTEMARK_SWEEP_LEASE  3


static void ngx_http_bytemark_sweep_tick(ngx_event_t *ev);
static void ngx_http_bytemark_sweep_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);


ngx_int_t
ngx_http_bytemark_cleanup_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_event_t  *ev;

    /* one sweep per backend, each over its own collection */
    ev = ngx_pcalloc(cycle->pool, sizeof(ngx_event_t));
    if (ev == NULL) {
        return NGX_ERROR;
    }

    ev->handler = ngx_http_bytemark_sweep_tick;
    ev->data = bmcf;
    ev->log = cycle->log;

    /* a timer must not keep a worker from shutting down */
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_min(bmcf->cleanup_interval,
                              NGX_HTTP_BYTEMARK_SWEEP_TICK));

    return NGX_OK;
}


static void
ngx_http_bytemark_sweep_tick(ngx_event_t *ev)
{
    int64_t                           stamp;
    ngx_msec_t                        lease;
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_main_conf_t    *bmcf;
    ngx_http_bytemark_call_delete_t  *del;

    bmcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, ngx_min(bmcf->cleanup_interval,
                              NGX_HTTP_BYTEMARK_SWEEP_TICK));

    if (ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                    NGX_HTTP_BYTEMARK_GATE_STUCK)
        != NGX_OK)
    {
        /* one more thread stuck in the driver would help nobody */
        return;
    }

    /*
     * A run is over after the driver's limit, unless the URI raised it:
     * one that lasts a few times that is stuck, and another may start.
     */
    lease = ngx_max(bmcf->cleanup_interval,
                    NGX_HTTP_BYTEMARK_SWEEP_LEASE * bmcf->mongo_limit);

    if (ngx_http_bytemark_cleanup_lock(bmcf, bmcf->cleanup_interval, lease,
                                       &stamp)
        != NGX_OK)
    {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "bytemark: cache cleanup run %L starts", stamp);

    call = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_DELETE,
                                         "mongo cache cleanup",
                                         ngx_http_bytemark_mongo_cleanup,
                                         ngx_http_bytemark_sweep_done,
                                         bmcf->mongo_limit);
    if (call == NULL) {
        ngx_http_bytemark_cleanup_unlock(bmcf, stamp);
        return;
    }

    call->bmcf = bmcf;
    del = ngx_http_bytemark_call_delete(call);
    del->max_age = (int64_t) bmcf->cleanup_max_age;
    del->stamp = stamp;
    call->always_done = 1;

    if (ngx_http_bytemark_call_start(call, NGX_LOG_WARN) != NGX_OK) {
        ngx_http_bytemark_cleanup_unlock(bmcf, stamp);
    }
}


static void
ngx_http_bytemark_sweep_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_http_bytemark_call_delete_t  *del;

    del = ngx_http_bytemark_call_delete(call);

    ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_CLEANUP_RUNS);

    if (o->result == NGX_HTTP_BYTEMARK_FOUND) {
        ngx_http_bytemark_metrics_add(NGX_HTTP_BYTEMARK_M_CLEANUP_DELETED,
                                      (ngx_uint_t) del->deleted);

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "bytemark: cache cleanup deleted %L entries older "
                      "than %L ms in %M ms", del->deleted,
                      del->max_age, o->elapsed);

    } else {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "bytemark: cache cleanup failed after %M ms: %s",
                      o->elapsed, o->error);
    }

    /* the run's stamp: a run that was taken over releases nothing */
    ngx_http_bytemark_cleanup_unlock(call->bmcf, del->stamp);
}
