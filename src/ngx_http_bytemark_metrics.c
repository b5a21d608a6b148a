
/*
 * Metrics (SPEC 3.5): counters, histograms and gauges in one shared-memory
 * zone, and their JSON and Prometheus renderings.
 *
 * Counters and histograms are ngx_atomic_t updated with
 * ngx_atomic_fetch_add(): workers and their pool threads add to the same
 * numbers without a lock.  nginx hands a zone with the same name, size and
 * tag to the new cycle on reload, so they survive reloads and restarted
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


#include "ngx_http_bytemark_module.h"


#define NGX_HTTP_BYTEMARK_METRICS_MAGIC    0x626d6d31    /* "bmm1" */

/* fixed, so that the zone is reused whatever the new configuration says */
#define NGX_HTTP_BYTEMARK_METRICS_SIZE     (256 * 1024)
#define NGX_HTTP_BYTEMARK_METRICS_SLOTS    256

#define NGX_HTTP_BYTEMARK_HANDLERS         6      /* index: handler constant */
#define NGX_HTTP_BYTEMARK_CODES            600    /* HTTP status 0 .. 599 */
#define NGX_HTTP_BYTEMARK_SOURCES          4
#define NGX_HTTP_BYTEMARK_BACKENDS         2
#define NGX_HTTP_BYTEMARK_KINDS            4
#define NGX_HTTP_BYTEMARK_BUCKETS          13     /* the last one is +Inf */

/* room that one formatted line or JSON member never exceeds */
#define NGX_HTTP_BYTEMARK_OUT_LINE         512


/* one worker's gauges, padded to 64 bytes: workers seldom share a line */
typedef struct {
    ngx_atomic_t                  pid;             /* 0: free */
    ngx_atomic_t                  calls;           /* posted, not completed */
    ngx_atomic_t                  busy[NGX_HTTP_BYTEMARK_BACKENDS];
    ngx_atomic_t                  mysql_idle;
    ngx_atomic_t                  mongo_clients;   /* created by the pool */
    ngx_atomic_t                  pad[2];
} ngx_http_bytemark_metrics_slot_t;


typedef struct {
    ngx_uint_t                    magic;
    size_t                        size;
    ngx_atomic_t                  requests[NGX_HTTP_BYTEMARK_HANDLERS]
                                          [NGX_HTTP_BYTEMARK_CODES];
    ngx_atomic_t                  answers[NGX_HTTP_BYTEMARK_SOURCES];
    ngx_atomic_t                  errors[NGX_HTTP_BYTEMARK_BACKENDS]
                                        [NGX_HTTP_BYTEMARK_KINDS];
    /* per bucket, not cumulative: one atomic add per observation */
    ngx_atomic_t                  buckets[NGX_HTTP_BYTEMARK_BACKENDS]
                                         [NGX_HTTP_BYTEMARK_BUCKETS];
    ngx_atomic_t                  sum_us[NGX_HTTP_BYTEMARK_BACKENDS];
    ngx_atomic_t                  counters[NGX_HTTP_BYTEMARK_M_N];
    ngx_http_bytemark_metrics_slot_t  slots[NGX_HTTP_BYTEMARK_METRICS_SLOTS];
} ngx_http_bytemark_metrics_shm_t;


/* the gauges of the live workers, summed */
typedef struct {
    int64_t                       calls;
    int64_t                       pool[NGX_HTTP_BYTEMARK_BACKENDS][2];
} ngx_http_bytemark_gauges_t;


/* a growing output buffer; a failed allocation is reported once, at the end */
typedef struct {
    ngx_pool_t                   *pool;
    u_char                       *start;
    u_char                       *pos;
    u_char                       *end;
    ngx_uint_t                    failed;
} ngx_http_bytemark_out_t;


/*
 * A metric family whose series are all present, zeros included: up to two
 * labels, n[0] x n[1] values.
 */
typedef struct {
    const char                   *name;
    const char                   *type;
    const char                   *help;
    const char                   *keys[2];        /* label names, or NULL */
    const char                  **labels[2];      /* label values */
    ngx_uint_t                    n[2];
} ngx_http_bytemark_family_t;


static ngx_int_t ngx_http_bytemark_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_int_t ngx_http_bytemark_metrics_log(ngx_http_request_t *r);
static void ngx_http_bytemark_metrics_answer(ngx_http_request_t *r);
static ngx_uint_t ngx_http_bytemark_metrics_backend(
    ngx_http_bytemark_call_t *call);
static int64_t ngx_http_bytemark_metrics_now_us(void);
static ngx_uint_t ngx_http_bytemark_metrics_alive(ngx_atomic_uint_t pid);
static void ngx_http_bytemark_metrics_gauges(
    ngx_http_bytemark_metrics_shm_t *m, ngx_http_bytemark_gauges_t *g);
static void ngx_http_bytemark_out(ngx_http_bytemark_out_t *o,
    const char *fmt, ...);
static void ngx_http_bytemark_prom_header(ngx_http_bytemark_out_t *o,
    const char *name, const char *type, const char *help);
static void ngx_http_bytemark_prom_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v);
static void ngx_http_bytemark_prom_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
static void ngx_http_bytemark_prom_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
static void ngx_http_bytemark_json_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v);
static void ngx_http_bytemark_json_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
static void ngx_http_bytemark_json_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
static void ngx_http_bytemark_metrics_values(
    ngx_http_bytemark_metrics_shm_t *m, int64_t *v);
static void ngx_http_bytemark_prom_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf);
static void ngx_http_bytemark_json_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf);
static ngx_uint_t ngx_http_bytemark_breaker_servers(
    ngx_http_bytemark_main_conf_t *bmcf);


/* process-wide: set in init_process, read by the event loop and threads */
static ngx_http_bytemark_metrics_shm_t   *ngx_http_bytemark_metrics_shm;
static ngx_http_bytemark_metrics_slot_t  *ngx_http_bytemark_metrics_slot;


static const char  *ngx_http_bytemark_handler_names[] = {
    "", "tickets", "pass", "ingest", "purge", "status"
};

static const char  *ngx_http_bytemark_sources[] = {
    "mongo", "mysql", "stale", "microcache"
};

static const char  *ngx_http_bytemark_backends[] = { "mongo", "mysql" };

static const char  *ngx_http_bytemark_kinds[] = {
    "timeout", "connect", "query", "breaker_open"
};

static const char  *ngx_http_bytemark_states[] = { "idle", "busy" };

static const char  *ngx_http_bytemark_events[] = {
    "hit", "miss", "expired", "eviction", "invalidation"
};

static const char  *ngx_http_bytemark_ops[] = { "fill", "ingest", "purge" };

static const char  *ngx_http_bytemark_none[] = { "" };


/* the families of the SPEC table but requests_total and the histogram */

static ngx_http_bytemark_family_t  ngx_http_bytemark_families[] = {

    { "bytemark_answers_total", "counter",
      "200 answers of the lookup handlers, by where the answer came from.",
      { "source", NULL }, { ngx_http_bytemark_sources, NULL }, { 4, 1 } },

    { "bytemark_backend_errors_total", "counter",
      "Failed backend calls, by backend and kind of failure.",
      { "backend", "kind" },
      { ngx_http_bytemark_backends, ngx_http_bytemark_kinds }, { 2, 4 } },

    { "bytemark_pool_connections", "gauge",
      "Connections in the backend pools of the live workers, idle or in use "
      "(MongoDB: driver clients).",
      { "backend", "state" },
      { ngx_http_bytemark_backends, ngx_http_bytemark_states }, { 2, 2 } },

    { "bytemark_thread_pool_queue", "gauge",
      "Backend calls posted to the thread pool and not completed yet "
      "(queued or running).",
      { NULL, NULL }, { ngx_http_bytemark_none, NULL }, { 1, 1 } },

    { "bytemark_microcache_events_total", "counter",
      "Micro-cache events.",
      { "event", NULL }, { ngx_http_bytemark_events, NULL }, { 5, 1 } },

    { "bytemark_cache_cleanup_runs_total", "counter",
      "Runs of the periodic cache cleanup.",
      { NULL, NULL }, { ngx_http_bytemark_none, NULL }, { 1, 1 } },

    { "bytemark_cache_cleanup_deleted_total", "counter",
      "Cache entries deleted by the periodic cache cleanup.",
      { NULL, NULL }, { ngx_http_bytemark_none, NULL }, { 1, 1 } },

    { "bytemark_cache_write_failures_total", "counter",
      "Failed writes to the MongoDB cache, by operation.",
      { "op", NULL }, { ngx_http_bytemark_ops, NULL }, { 3, 1 } }
};

#define NGX_HTTP_BYTEMARK_FAMILIES                                            \
    (sizeof(ngx_http_bytemark_families) / sizeof(ngx_http_bytemark_family_t))

/* all their values, in order */
#define NGX_HTTP_BYTEMARK_VALUES                                              \
    (NGX_HTTP_BYTEMARK_SOURCES                                                \
     + NGX_HTTP_BYTEMARK_BACKENDS * NGX_HTTP_BYTEMARK_KINDS                   \
     + NGX_HTTP_BYTEMARK_BACKENDS * 2 + 1 + NGX_HTTP_BYTEMARK_M_N)


/*
 * From a cache hit (well under a millisecond) to the drivers' own limits
 * (a few seconds); microseconds, as measured.
 */

static const int64_t  ngx_http_bytemark_bounds[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000
};

static const char  *ngx_http_bytemark_le[NGX_HTTP_BYTEMARK_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "+Inf"
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

    if (bmcf->metrics_zone == NULL
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


void
ngx_http_bytemark_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t                         i;
    ngx_atomic_uint_t                  pid;
    ngx_http_bytemark_metrics_shm_t   *m;
    ngx_http_bytemark_metrics_slot_t  *s;

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

    /* the thread pool's queue: MySQL calls run on the event loop */
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
 * Event loop: the thread is done with the call, abandoned or not.  The
 * duration is the backend's own, from posting to completion, even when
 * the request stopped waiting for it earlier.
 */

void
ngx_http_bytemark_metrics_call_completed(ngx_http_bytemark_call_t *call)
{
    int64_t                           us;
    ngx_uint_t                        b, i, kind;
    ngx_http_bytemark_metrics_shm_t  *m;

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

    (void) ngx_atomic_fetch_add(&m->buckets[b][i], 1);
    (void) ngx_atomic_fetch_add(&m->sum_us[b], (ngx_atomic_int_t) us);

    if (call->run == ngx_http_bytemark_mongo_fill && call->error[0]) {
        /* a fill that lost on the duplicate key leaves no error */
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_FILL);
    }

    if (call->answer.result != NGX_HTTP_BYTEMARK_FAILED
        || call->budget.timedout)
    {
        /* no failure, or one already counted as a timeout */
        return;
    }

    kind = call->answer.error_kind;

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

static ngx_uint_t
ngx_http_bytemark_metrics_alive(ngx_atomic_uint_t pid)
{
    return kill((ngx_pid_t) pid, 0) == 0 || ngx_errno == NGX_EPERM;
}


static void
ngx_http_bytemark_metrics_gauges(ngx_http_bytemark_metrics_shm_t *m,
    ngx_http_bytemark_gauges_t *g)
{
    int64_t                            busy, clients;
    ngx_uint_t                         i;
    ngx_atomic_uint_t                  pid;
    ngx_http_bytemark_metrics_slot_t  *s;

    ngx_memzero(g, sizeof(ngx_http_bytemark_gauges_t));

    for (i = 0; i < NGX_HTTP_BYTEMARK_METRICS_SLOTS; i++) {
        s = &m->slots[i];
        pid = s->pid;

        if (pid == 0
            || (pid != (ngx_atomic_uint_t) ngx_pid
                && !ngx_http_bytemark_metrics_alive(pid)))
        {
            continue;
        }

        g->calls += (ngx_atomic_int_t) s->calls;

        busy = (ngx_atomic_int_t) s->busy[NGX_HTTP_BYTEMARK_BACKEND_MONGO];
        clients = (ngx_atomic_int_t) s->mongo_clients;

        g->pool[NGX_HTTP_BYTEMARK_BACKEND_MONGO][0] +=
                                          ngx_max(clients - busy, 0);
        g->pool[NGX_HTTP_BYTEMARK_BACKEND_MONGO][1] += busy;

        g->pool[NGX_HTTP_BYTEMARK_BACKEND_MYSQL][0] +=
                                          (ngx_atomic_int_t) s->mysql_idle;
        g->pool[NGX_HTTP_BYTEMARK_BACKEND_MYSQL][1] +=
                   (ngx_atomic_int_t) s->busy[NGX_HTTP_BYTEMARK_BACKEND_MYSQL];
    }

    /* the values are read while threads update them: never show < 0 */

    g->calls = ngx_max(g->calls, 0);

    for (i = 0; i < 4; i++) {
        g->pool[i / 2][i % 2] = ngx_max(g->pool[i / 2][i % 2], 0);
    }
}


/*
 * The body of the status page.  Both formats are rendered from the same
 * numbers, in the order of the SPEC's table.
 */

ngx_int_t
ngx_http_bytemark_metrics_render(ngx_http_request_t *r,
    ngx_uint_t prometheus, ngx_str_t *body)
{
    int64_t                           values[NGX_HTTP_BYTEMARK_VALUES], *v;
    ngx_uint_t                        i;
    ngx_http_bytemark_out_t           o;
    ngx_http_bytemark_family_t       *f;
    ngx_http_bytemark_main_conf_t    *bmcf;
    ngx_http_bytemark_metrics_shm_t  *m;

    m = ngx_http_bytemark_metrics_shm;
    bmcf = ngx_http_get_module_main_conf(r, ngx_http_bytemark_module);

    if (m == NULL) {
        return NGX_ERROR;
    }

    o.pool = r->pool;
    o.start = ngx_pnalloc(r->pool, 16384);
    if (o.start == NULL) {
        return NGX_ERROR;
    }

    o.pos = o.start;
    o.end = o.start + 16384;
    o.failed = 0;

    ngx_http_bytemark_metrics_values(m, values);

    f = ngx_http_bytemark_families;
    v = values;

    if (prometheus) {
        ngx_http_bytemark_prom_requests(&o, m);

        for (i = 0; i < NGX_HTTP_BYTEMARK_FAMILIES; i++) {
            ngx_http_bytemark_prom_family(&o, &f[i], v);
            v += f[i].n[0] * f[i].n[1];

            if (i == 1) {
                /* after the errors, as in the table */
                ngx_http_bytemark_prom_histogram(&o, m);
            }
        }

        ngx_http_bytemark_prom_breakers(&o, bmcf);

    } else {
        ngx_http_bytemark_out(&o, "{");
        ngx_http_bytemark_json_requests(&o, m);

        for (i = 0; i < NGX_HTTP_BYTEMARK_FAMILIES; i++) {
            ngx_http_bytemark_json_family(&o, &f[i], v);
            v += f[i].n[0] * f[i].n[1];

            if (i == 1) {
                ngx_http_bytemark_json_histogram(&o, m);
            }
        }

        ngx_http_bytemark_json_breakers(&o, bmcf);

        /* replaces the last member's comma */
        o.pos[-1] = '}';
        ngx_http_bytemark_out(&o, "\n");
    }

    if (o.failed) {
        return NGX_ERROR;
    }

    body->data = o.start;
    body->len = o.pos - o.start;

    return NGX_OK;
}


/* the values of ngx_http_bytemark_families[], in the same order */

static void
ngx_http_bytemark_metrics_values(ngx_http_bytemark_metrics_shm_t *m,
    int64_t *v)
{
    ngx_uint_t                  i, k;
    ngx_http_bytemark_gauges_t  g;

    ngx_http_bytemark_metrics_gauges(m, &g);

    for (i = 0; i < NGX_HTTP_BYTEMARK_SOURCES; i++) {
        *v++ = m->answers[i];
    }

    for (i = 0; i < NGX_HTTP_BYTEMARK_BACKENDS; i++) {
        for (k = 0; k < NGX_HTTP_BYTEMARK_KINDS; k++) {
            *v++ = m->errors[i][k];
        }
    }

    for (i = 0; i < NGX_HTTP_BYTEMARK_BACKENDS; i++) {
        *v++ = g.pool[i][0];
        *v++ = g.pool[i][1];
    }

    *v++ = g.calls;

    /* microcache events, cleanup runs and deleted, write failures */
    for (i = 0; i < NGX_HTTP_BYTEMARK_M_N; i++) {
        *v++ = m->counters[i];
    }
}


/* ensures room for one more line, doubling the buffer as needed */

static void
ngx_http_bytemark_out(ngx_http_bytemark_out_t *o, const char *fmt, ...)
{
    u_char   *p;
    size_t    size;
    va_list   args;

    if (o->failed) {
        return;
    }

    if (o->end - o->pos < NGX_HTTP_BYTEMARK_OUT_LINE) {
        size = 2 * (o->end - o->start);

        p = ngx_pnalloc(o->pool, size);
        if (p == NULL) {
            o->failed = 1;
            return;
        }

        o->pos = ngx_cpymem(p, o->start, o->pos - o->start);
        o->start = p;
        o->end = p + size;
    }

    va_start(args, fmt);
    o->pos = ngx_vslprintf(o->pos, o->end, fmt, args);
    va_end(args);
}


static void
ngx_http_bytemark_prom_header(ngx_http_bytemark_out_t *o, const char *name,
    const char *type, const char *help)
{
    ngx_http_bytemark_out(o, "# HELP %s %s\n# TYPE %s %s\n",
                          name, help, name, type);
}


static void
ngx_http_bytemark_prom_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v)
{
    ngx_uint_t  i, k;

    ngx_http_bytemark_prom_header(o, f->name, f->type, f->help);

    for (i = 0; i < f->n[0]; i++) {
        for (k = 0; k < f->n[1]; k++, v++) {

            if (f->keys[0] == NULL) {
                ngx_http_bytemark_out(o, "%s %L\n", f->name, *v);

            } else if (f->keys[1] == NULL) {
                ngx_http_bytemark_out(o, "%s{%s=\"%s\"} %L\n", f->name,
                                      f->keys[0], f->labels[0][i], *v);

            } else {
                ngx_http_bytemark_out(o, "%s{%s=\"%s\",%s=\"%s\"} %L\n",
                                      f->name, f->keys[0], f->labels[0][i],
                                      f->keys[1], f->labels[1][k], *v);
            }
        }
    }
}


/* only the series that moved: HTTP status codes are many */

static void
ngx_http_bytemark_prom_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m)
{
    ngx_uint_t         h, s;
    ngx_atomic_uint_t  v;

    ngx_http_bytemark_prom_header(o, "bytemark_requests_total", "counter",
        "Requests to bytemark locations, by handler and HTTP status.");

    for (h = 1; h < NGX_HTTP_BYTEMARK_HANDLERS; h++) {
        for (s = 0; s < NGX_HTTP_BYTEMARK_CODES; s++) {
            v = m->requests[h][s];

            if (v) {
                ngx_http_bytemark_out(o, "bytemark_requests_total{handler="
                                      "\"%s\",status=\"%03ui\"} %uA\n",
                                      ngx_http_bytemark_handler_names[h], s, v);
            }
        }
    }
}


/* buckets are cumulative in the output; _count is the +Inf bucket */

static void
ngx_http_bytemark_prom_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m)
{
    ngx_uint_t         b, i;
    ngx_atomic_uint_t  n, sum;

    ngx_http_bytemark_prom_header(o, "bytemark_backend_duration_seconds",
        "histogram",
        "Duration of backend calls, from posting to the thread pool to "
        "completion.");

    for (b = 0; b < NGX_HTTP_BYTEMARK_BACKENDS; b++) {
        n = 0;

        for (i = 0; i < NGX_HTTP_BYTEMARK_BUCKETS; i++) {
            n += m->buckets[b][i];

            ngx_http_bytemark_out(o, "bytemark_backend_duration_seconds_bucket"
                                  "{backend=\"%s\",le=\"%s\"} %uA\n",
                                  ngx_http_bytemark_backends[b],
                                  ngx_http_bytemark_le[i], n);
        }

        sum = m->sum_us[b];

        ngx_http_bytemark_out(o, "bytemark_backend_duration_seconds_sum"
                              "{backend=\"%s\"} %uA.%06uA\n"
                              "bytemark_backend_duration_seconds_count"
                              "{backend=\"%s\"} %uA\n",
                              ngx_http_bytemark_backends[b],
                              sum / 1000000, sum % 1000000,
                              ngx_http_bytemark_backends[b], n);
    }
}


/* "name": v, "name": {"a": v}, "name": {"a": {"x": v}}; each ends "," */

static void
ngx_http_bytemark_json_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v)
{
    ngx_uint_t  i, k;

    if (f->keys[0] == NULL) {
        ngx_http_bytemark_out(o, "\"%s\":%L,", f->name, *v);
        return;
    }

    ngx_http_bytemark_out(o, "\"%s\":{", f->name);

    for (i = 0; i < f->n[0]; i++) {

        if (f->keys[1] == NULL) {
            ngx_http_bytemark_out(o, "\"%s\":%L,", f->labels[0][i], *v++);
            continue;
        }

        ngx_http_bytemark_out(o, "\"%s\":{", f->labels[0][i]);

        for (k = 0; k < f->n[1]; k++) {
            ngx_http_bytemark_out(o, "\"%s\":%L,", f->labels[1][k], *v++);
        }

        o->pos[-1] = '}';
        ngx_http_bytemark_out(o, ",");
    }

    o->pos[-1] = '}';
    ngx_http_bytemark_out(o, ",");
}


static void
ngx_http_bytemark_json_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m)
{
    ngx_uint_t         h, s, any;
    ngx_atomic_uint_t  v;

    ngx_http_bytemark_out(o, "\"bytemark_requests_total\":{");

    for (h = 1; h < NGX_HTTP_BYTEMARK_HANDLERS; h++) {
        ngx_http_bytemark_out(o, "\"%s\":{",
                              ngx_http_bytemark_handler_names[h]);
        any = 0;

        for (s = 0; s < NGX_HTTP_BYTEMARK_CODES; s++) {
            v = m->requests[h][s];

            if (v) {
                ngx_http_bytemark_out(o, "\"%03ui\":%uA,", s, v);
                any = 1;
            }
        }

        if (any) {
            o->pos[-1] = '}';
            ngx_http_bytemark_out(o, ",");

        } else {
            ngx_http_bytemark_out(o, "},");
        }
    }

    o->pos[-1] = '}';
    ngx_http_bytemark_out(o, ",");
}


static void
ngx_http_bytemark_json_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m)
{
    ngx_uint_t         b, i;
    ngx_atomic_uint_t  n, sum;

    ngx_http_bytemark_out(o, "\"bytemark_backend_duration_seconds\":{");

    for (b = 0; b < NGX_HTTP_BYTEMARK_BACKENDS; b++) {
        ngx_http_bytemark_out(o, "\"%s\":{\"buckets\":{",
                              ngx_http_bytemark_backends[b]);
        n = 0;

        for (i = 0; i < NGX_HTTP_BYTEMARK_BUCKETS; i++) {
            n += m->buckets[b][i];
            ngx_http_bytemark_out(o, "\"%s\":%uA,", ngx_http_bytemark_le[i], n);
        }

        o->pos[-1] = '}';
        sum = m->sum_us[b];

        ngx_http_bytemark_out(o, ",\"sum\":%uA.%06uA,\"count\":%uA},",
                              sum / 1000000, sum % 1000000, n);
    }

    o->pos[-1] = '}';
    ngx_http_bytemark_out(o, ",");
}


/*
 * Not in the SPEC's table: 1 while a backend's circuit breaker is open and
 * its calls are skipped, 0 when it is closed or lets a probe through.  One
 * breaker for MongoDB, one per "bytemark_mysql" server, in their order.
 */

static void
ngx_http_bytemark_prom_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t  i, n;

    ngx_http_bytemark_prom_header(o, "bytemark_breaker_open", "gauge",
        "1 while the circuit breaker of a backend is open and its calls "
        "are skipped.");

    if (bmcf->mongo_uri.len) {
        ngx_http_bytemark_out(o, "bytemark_breaker_open{backend=\"mongo\"} "
                              "%d\n",
                              ngx_http_bytemark_breaker_is_open(bmcf,
                                  NGX_HTTP_BYTEMARK_BREAKER_MONGO) ? 1 : 0);
    }

    n = ngx_http_bytemark_breaker_servers(bmcf);

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_out(o, "bytemark_breaker_open{backend=\"mysql\","
                              "server=\"%ui\"} %d\n", i + 1,
                              ngx_http_bytemark_breaker_is_open(bmcf,
                                  NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i) ? 1 : 0);
    }
}


/* "bytemark_breaker_open": {"mongo": 0, "mysql": {"1": 0, "2": 0}}, */

static void
ngx_http_bytemark_json_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t  i, n;

    ngx_http_bytemark_out(o, "\"bytemark_breaker_open\":{");

    if (bmcf->mongo_uri.len) {
        ngx_http_bytemark_out(o, "\"mongo\":%d,",
                              ngx_http_bytemark_breaker_is_open(bmcf,
                                  NGX_HTTP_BYTEMARK_BREAKER_MONGO) ? 1 : 0);
    }

    ngx_http_bytemark_out(o, "\"mysql\":{");

    n = ngx_http_bytemark_breaker_servers(bmcf);

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_out(o, "\"%ui\":%d,", i + 1,
                              ngx_http_bytemark_breaker_is_open(bmcf,
                                  NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i) ? 1 : 0);
    }

    if (n) {
        o->pos--;
    }

    ngx_http_bytemark_out(o, "}},");
}


static ngx_uint_t
ngx_http_bytemark_breaker_servers(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t  n, max;

    n = bmcf->mysql_servers ? bmcf->mysql_servers->nelts : 0;
    max = NGX_HTTP_BYTEMARK_BREAKERS - NGX_HTTP_BYTEMARK_BREAKER_MYSQL;

    return ngx_min(n, max);
}
