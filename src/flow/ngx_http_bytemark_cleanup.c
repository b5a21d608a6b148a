
/*
 * bytemark_cache_cleanup interval=... max_age=...: delete cache entries whose
 * timestamp is older than max_age.  Every worker looks at a timer; the one
 * that takes the lock in shared memory (ngx_http_bytemark_shm.c) runs the
 * deleteMany on the thread pool.  The lock and the time of the last run live
 * in a zone that survives reloads, so old and new workers never run it twice
 * in parallel nor more often than the interval.
 */


#include "ngx_http_bytemark_flow.h"


/* how often a worker looks, whatever the interval */
#define NGX_HTTP_BYTEMARK_CLEANUP_TICK  1000


static ngx_event_t  ngx_http_bytemark_cleanup_ev;


static void ngx_http_bytemark_cleanup_tick(ngx_event_t *ev);
static void ngx_http_bytemark_cleanup_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call);


ngx_int_t
ngx_http_bytemark_cleanup_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_event_t  *ev;

    ev = &ngx_http_bytemark_cleanup_ev;

    ev->handler = ngx_http_bytemark_cleanup_tick;
    ev->data = bmcf;
    ev->log = cycle->log;

    /* a timer must not keep a worker from shutting down */
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_min(bmcf->cleanup_interval,
                              NGX_HTTP_BYTEMARK_CLEANUP_TICK));

    return NGX_OK;
}


static void
ngx_http_bytemark_cleanup_tick(ngx_event_t *ev)
{
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(ev, ngx_min(bmcf->cleanup_interval,
                              NGX_HTTP_BYTEMARK_CLEANUP_TICK));

    if (ngx_http_bytemark_cleanup_lock(bmcf, bmcf->cleanup_interval)
        != NGX_OK)
    {
        return;
    }

    call = ngx_http_bytemark_call_create(NULL, "mongo cache cleanup",
                                         ngx_http_bytemark_mongo_cleanup,
                                         ngx_http_bytemark_cleanup_done,
                                         0);
    if (call == NULL) {
        ngx_http_bytemark_cleanup_unlock(bmcf);
        return;
    }

    call->max_age = (int64_t) bmcf->cleanup_max_age;
    call->always_done = 1;

    if (ngx_http_bytemark_call_post(call) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "bytemark: cache cleanup skipped: thread pool queue "
                      "is full");
        ngx_http_bytemark_call_free(call);
        ngx_http_bytemark_cleanup_unlock(bmcf);
    }
}


static void
ngx_http_bytemark_cleanup_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_CLEANUP_RUNS);

    if (call->answer.result == NGX_HTTP_BYTEMARK_FOUND) {
        ngx_http_bytemark_metrics_add(NGX_HTTP_BYTEMARK_M_CLEANUP_DELETED,
                                      (ngx_uint_t) call->answer.count);

        ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                      "bytemark: cache cleanup deleted %L entries older "
                      "than %L ms in %M ms", call->answer.count,
                      call->max_age, call->elapsed);

    } else {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "bytemark: cache cleanup failed after %M ms: %s",
                      call->elapsed, call->error);
    }

    ngx_http_bytemark_cleanup_unlock(call->bmcf);
}
