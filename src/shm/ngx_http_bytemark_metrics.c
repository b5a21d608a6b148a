
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Metrics (SPEC 3.5), the store: counters, histograms and gauges in one
 * shared-memory zone, behind the core's metrics interface (the layers
 * below report through it without including this layer).  Their JSON and
 * Prometheus renderings are ngx_http_bytemark_metrics_render.c (with
 * metrics_json.c and metrics_prom.c).
 *
 * Counters and histograms are ngx_atomic_t updated with
 * ngx_atomic_fetch_add(): workers and their MongoDB pool threads add to the
 * same numbers without a lock.  nginx hands a zone with the same name, size
 * and tag to the new cycle on reload, so they survive reloads and restarted
 * workers; they start from zero when nginx starts.
 *
 * Gauges describe one worker's own resources (its connection pools, its
 * calls in flight), so each worker keeps them in a slot of its own, claimed
 * at init_process and given back at exit_process, and rendering sums the
 * slots of live processes: a worker that crashed leaves no drift behind.
 * Slots are keyed by pid, not by ngx_worker, because during a reload the old
 * workers, still finishing their requests, and the new ones have the same
 * ngx_worker numbers.
 */


#include "ngx_http_bytemark_metrics_private.h"


static ngx_int_t ngx_http_bytemark_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_http_bytemark_metrics_log(ngx_http_request_t *r);
static void ngx_http_bytemark_metrics_answer(ngx_http_request_t *r);
static ngx_uint_t ngx_http_bytemark_metrics_backend(
    ngx_http_bytemark_call_t *call);
static int64_t ngx_http_bytemark_metrics_now_us(void);


/* process-wide: set in init_process, read by the event loop and threads */
ngx_http_bytemark_metrics_shm_t          *ngx_http_bytemark_metrics_shm;
static ngx_http_bytemark_metrics_slot_t  *ngx_http_bytemark_metrics_slot;


const char  *ngx_http_bytemark_sources[NGX_HTTP_BYTEMARK_SOURCES] = {
    "mongo", "mysql", "stale", "microcache"
};


/*
 * From a cache hit (well under a millisecond) to the drivers' own limits
 * (a few seconds); microseconds, as measured.
 */

static const int64_t  ngx_http_bytemark_bounds[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000
};


/*
 * Called by "bytemark_status" and for any configuration with a backend.
 * ngx_shared_memory_add() returns the same zone for the same name and tag.
 */

ngx_int_t
ngx_http_bytemark_metrics_add_zone(ngx_conf_t *cf)
{
    ngx_shm_zone_t                 *zone;
    ngx_http_bytemark_main_conf_t  *bmcf;

    static ngx_str_t  name = ngx_string("bytemark_metrics");

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_bytemark_module);

    if (bmcf->metrics_zone) {
        return NGX_OK;
    }

    zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_BYTEMARK_METRICS_SIZE,
                                 &ngx_http_bytemark_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_bytemark_metrics_init_zone;
    bmcf->metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t                  *shpool;
    ngx_http_bytemark_metrics_shm_t  *m;

    m = data;

    if (m && m->magic == NGX_HTTP_BYTEMARK_METRICS_MAGIC
        && m->size == sizeof(ngx_http_bytemark_metrics_shm_t))
    {
        /* a reload: keep counting where the old cycle was */
        zone->data = m;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    m = ngx_slab_calloc(shpool, sizeof(ngx_http_bytemark_metrics_shm_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->magic = NGX_HTTP_BYTEMARK_METRICS_MAGIC;
    m->size = sizeof(ngx_http_bytemark_metrics_shm_t);

    shpool->data = m;
    zone->data = m;

    return NGX_OK;
}


/*
 * Requests are counted in the log phase, when their final status is
 * known, whichever way the handler ended.
 */

ngx_int_t
ngx_http_bytemark_metrics_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_bytemark_module);

    if (bmcf->metrics_zone == NULL && bmcf->backends == NULL
        && bmcf->mongo_uri.len == 0 && bmcf->mysql_servers == NULL)
    {
        /* the module is loaded but not used */
        return NGX_OK;
    }

    if (ngx_http_bytemark_metrics_add_zone(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_bytemark_metrics_log;

    return NGX_OK;
}


/* the call layer reports here, and asks the breakers, through this */
static const ngx_http_bytemark_call_observer_t  ngx_http_bytemark_observer = {
    ngx_http_bytemark_breaker_allow,
    ngx_http_bytemark_breaker_is_open,
    ngx_http_bytemark_health_observed,      /* the breaker, and health */
    ngx_http_bytemark_metrics_backend_error,
    ngx_http_bytemark_metrics_call_posted,
    ngx_http_bytemark_metrics_call_timed_out,
    ngx_http_bytemark_metrics_call_completed
};


void
ngx_http_bytemark_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t                         i;
    ngx_atomic_uint_t                  pid;
    ngx_http_bytemark_metrics_shm_t   *m;
    ngx_http_bytemark_metrics_slot_t  *s;

    ngx_http_bytemark_call_observe(&ngx_http_bytemark_observer);

    if (bmcf->metrics_zone == NULL) {
        return;
    }

    m = bmcf->metrics_zone->data;
    ngx_http_bytemark_metrics_shm = m;

    /* a free slot, or one left behind by a process that is gone */

    for (i = 0; i < NGX_HTTP_BYTEMARK_METRICS_SLOTS; i++) {
        s = &m->slots[i];
        pid = s->pid;

        if (pid != 0 && pid != (ngx_atomic_uint_t) ngx_pid
            && ngx_http_bytemark_metrics_alive(pid))
        {
            continue;
        }

        if (ngx_atomic_cmp_set(&s->pid, pid, (ngx_atomic_uint_t) ngx_pid)) {
            s->calls = 0;
            s->busy[0] = 0;
            s->busy[1] = 0;
            s->mysql_idle = 0;
            s->mongo_clients = 0;

            ngx_http_bytemark_metrics_slot = s;
            return;
        }
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "bytemark: more than %d live workers, the pool and "
                  "thread pool gauges leave this one out",
                  NGX_HTTP_BYTEMARK_METRICS_SLOTS);
}


/* the thread pools have drained: nothing updates the slot any more */

void
ngx_http_bytemark_metrics_exit_process(void)
{
    ngx_http_bytemark_metrics_slot_t  *s;

    s = ngx_http_bytemark_metrics_slot;

    if (s == NULL) {
        return;
    }

    ngx_http_bytemark_metrics_slot = NULL;

    s->calls = 0;
    s->busy[0] = 0;
    s->busy[1] = 0;
    s->mysql_idle = 0;
    s->mongo_clients = 0;

    ngx_memory_barrier();

    s->pid = 0;
}


static ngx_int_t
ngx_http_bytemark_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                        status;
    ngx_http_bytemark_loc_conf_t     *blcf;
    ngx_http_bytemark_metrics_shm_t  *m;

    m = ngx_http_bytemark_metrics_shm;
    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (m == NULL || blcf->handler == 0
        || blcf->handler >= NGX_HTTP_BYTEMARK_HANDLERS)
    {
        return NGX_OK;
    }

    /* as $status has it */
    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status >= NGX_HTTP_BYTEMARK_CODES) {
        status = 0;
    }

    (void) ngx_atomic_fetch_add(&m->requests[blcf->handler][status], 1);

    if (status == NGX_HTTP_OK) {
        ngx_http_bytemark_metrics_answer(r);
    }

    return NGX_OK;
}


/* a micro-cache hit counts as such, whatever source stored the answer */

static void
ngx_http_bytemark_metrics_answer(ngx_http_request_t *r)
{
    ngx_uint_t                i;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL) {
        return;
    }

    if (ctx->mc_served) {
        /* a HIT, or an expired answer served while it is refreshed */
        i = 3;

    } else {
        for (i = 0; i < 3; i++) {
            if (ctx->source.len == ngx_strlen(ngx_http_bytemark_sources[i])
                && ngx_strncmp(ctx->source.data, ngx_http_bytemark_sources[i],
                               ctx->source.len)
                   == 0)
            {
                break;
            }
        }

        if (i == 3) {
            /* not a lookup answer (ingest, status) */
            return;
        }
    }

    (void) ngx_atomic_fetch_add(&ngx_http_bytemark_metrics_shm->answers[i], 1);
}


/* for counters without a home in the call layer: cleanup, cache writes */

void
ngx_http_bytemark_metrics_add(ngx_uint_t metric, ngx_uint_t n)
{
    if (ngx_http_bytemark_metrics_shm == NULL
        || metric >= NGX_HTTP_BYTEMARK_M_N)
    {
        return;
    }

    (void) ngx_atomic_fetch_add(
                        &ngx_http_bytemark_metrics_shm->counters[metric], n);
}


void
ngx_http_bytemark_metrics_backend_error(ngx_uint_t backend, ngx_uint_t kind)
{
    if (ngx_http_bytemark_metrics_shm == NULL
        || backend >= NGX_HTTP_BYTEMARK_BACKENDS
        || kind == NGX_HTTP_BYTEMARK_ERR_NONE
        || kind > NGX_HTTP_BYTEMARK_KINDS)
    {
        return;
    }

    (void) ngx_atomic_fetch_add(
                 &ngx_http_bytemark_metrics_shm->errors[backend][kind - 1], 1);
}


/* event loop: a call was handed to the thread pool, or queued for MySQL */

void
ngx_http_bytemark_metrics_call_posted(ngx_http_bytemark_call_t *call)
{
    call->posted_us = ngx_http_bytemark_metrics_now_us();

    /* the thread pool's queue: MySQL calls run on the event loop (a TLS
     * connect is counted by ngx_http_bytemark_metrics_thread_task()) */
    if (ngx_http_bytemark_metrics_slot
        && call->backend != NGX_HTTP_BYTEMARK_BACKEND_MYSQL)
    {
        (void) ngx_atomic_fetch_add(&ngx_http_bytemark_metrics_slot->calls, 1);
    }
}


/* event loop: the budget of a call was spent; counted once, here */

void
ngx_http_bytemark_metrics_call_timed_out(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_metrics_backend_error(
        ngx_http_bytemark_metrics_backend(call), NGX_HTTP_BYTEMARK_ERR_TIMEOUT);
}


/*
 * Event loop: the backend is done with the call (a MongoDB thread, or MySQL
 * on the event loop), abandoned or not.  The
 * duration is the backend's own, from posting to completion, even when
 * the request stopped waiting for it earlier.
 */

void
ngx_http_bytemark_metrics_call_completed(ngx_http_bytemark_call_t *call)
{
    int64_t                           us;
    ngx_uint_t                        b, i, n, kind;
    ngx_http_bytemark_metrics_shm_t  *m;
    ngx_http_bytemark_call_batch_t   *batch;

    m = ngx_http_bytemark_metrics_shm;

    if (ngx_http_bytemark_metrics_slot
        && call->backend != NGX_HTTP_BYTEMARK_BACKEND_MYSQL)
    {
        (void) ngx_atomic_fetch_add(&ngx_http_bytemark_metrics_slot->calls,
                                    (ngx_atomic_int_t) -1);
    }

    if (m == NULL) {
        return;
    }

    b = ngx_http_bytemark_metrics_backend(call);

    us = ngx_http_bytemark_metrics_now_us() - call->posted_us;
    if (us < 0) {
        us = 0;
    }

    for (i = 0; i < NGX_HTTP_BYTEMARK_BUCKETS - 1; i++) {
        if (us <= ngx_http_bytemark_bounds[i]) {
            break;
        }
    }

    /* a MongoDB find task: one observation per lookup it carried */
    batch = ngx_http_bytemark_call_batch(call);
    n = (batch && batch->nmembers) ? batch->nmembers : 1;

    (void) ngx_atomic_fetch_add(&m->buckets[b][i], n);
    (void) ngx_atomic_fetch_add(&m->sum_us[b], (ngx_atomic_int_t) (n * us));

    if (batch && batch->nmembers) {
        for (i = 0; i < NGX_HTTP_BYTEMARK_BATCH_BUCKETS - 1; i++) {
            if (n <= (ngx_uint_t) 1 << i) {
                break;
            }
        }

        (void) ngx_atomic_fetch_add(&m->batch[i], 1);
        (void) ngx_atomic_fetch_add(&m->batch_sum, n);
    }

    if (call->result != NGX_HTTP_BYTEMARK_FAILED
        || call->budget.timedout)
    {
        /* no failure, or one already counted as a timeout */
        return;
    }

    kind = call->error_kind;

    ngx_http_bytemark_metrics_backend_error(b,
        kind ? kind : NGX_HTTP_BYTEMARK_ERR_QUERY);
}


/* call names start with the backend's: "mongo find", "mysql pass query" */

static ngx_uint_t
ngx_http_bytemark_metrics_backend(ngx_http_bytemark_call_t *call)
{
    return call->backend;
}


/*
 * Pool threads: a MongoDB client taken from and given back to the worker's
 * pool.  The driver has no pool-size API, but it creates a client only when
 * none is idle and never destroys one before the pool goes, so the clients
 * it created are the highest number ever busy at once.  Counting busy after
 * the pop and before the push keeps that estimate from ever exceeding the
 * truth; it can fall short by the clients of a burst that did not overlap
 * in our counting.
 */

void
ngx_http_bytemark_metrics_mongo_pop(void)
{
    ngx_atomic_uint_t                  busy, clients;
    ngx_http_bytemark_metrics_slot_t  *s;

    s = ngx_http_bytemark_metrics_slot;

    if (s == NULL) {
        return;
    }

    busy = ngx_atomic_fetch_add(&s->busy[NGX_HTTP_BYTEMARK_BACKEND_MONGO], 1)
           + 1;

    for ( ;; ) {
        clients = s->mongo_clients;

        if (busy <= clients
            || ngx_atomic_cmp_set(&s->mongo_clients, clients, busy))
        {
            return;
        }
    }
}


void
ngx_http_bytemark_metrics_mongo_push(void)
{
    ngx_http_bytemark_metrics_slot_t  *s;

    s = ngx_http_bytemark_metrics_slot;

    if (s) {
        (void) ngx_atomic_fetch_add(&s->busy[NGX_HTTP_BYTEMARK_BACKEND_MONGO],
                                    (ngx_atomic_int_t) -1);
    }
}


/* event loop: a MySQL TLS connect posted to the thread pool (1), or back */

void
ngx_http_bytemark_metrics_thread_task(ngx_int_t n)
{
    if (ngx_http_bytemark_metrics_slot) {
        (void) ngx_atomic_fetch_add(&ngx_http_bytemark_metrics_slot->calls,
                                    (ngx_atomic_int_t) n);
    }
}


/* event loop: a MySQL pool slot taken, with an open connection or not */

void
ngx_http_bytemark_metrics_mysql_acquire(ngx_uint_t open)
{
    ngx_http_bytemark_metrics_slot_t  *s;

    s = ngx_http_bytemark_metrics_slot;

    if (s == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&s->busy[NGX_HTTP_BYTEMARK_BACKEND_MYSQL], 1);

    if (open) {
        (void) ngx_atomic_fetch_add(&s->mysql_idle, (ngx_atomic_int_t) -1);
    }
}


/* ... and given back, its connection still open or closed */

void
ngx_http_bytemark_metrics_mysql_release(ngx_uint_t open)
{
    ngx_http_bytemark_metrics_slot_t  *s;

    s = ngx_http_bytemark_metrics_slot;

    if (s == NULL) {
        return;
    }

    (void) ngx_atomic_fetch_add(&s->busy[NGX_HTTP_BYTEMARK_BACKEND_MYSQL],
                                (ngx_atomic_int_t) -1);

    if (open) {
        (void) ngx_atomic_fetch_add(&s->mysql_idle, 1);
    }
}


static int64_t
ngx_http_bytemark_metrics_now_us(void)
{
#if (NGX_HAVE_CLOCK_MONOTONIC)
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
#else
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000000 + tv.tv_usec;
#endif
}


/* EPERM: it exists, as another user */

ngx_uint_t
ngx_http_bytemark_metrics_alive(ngx_atomic_uint_t pid)
{
    return kill((ngx_pid_t) pid, 0) == 0 || ngx_errno == NGX_EPERM;
}
