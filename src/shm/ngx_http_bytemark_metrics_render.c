
/*
 * The renderings of the metrics store (SPEC 3.5) for the status page: JSON
 * and Prometheus text, from the same numbers, in the order of the SPEC's
 * table, zeros included.  Gauges are the sums of the live workers' slots;
 * breaker states are read from the shared zone of shm.c.
 */


#include "ngx_http_bytemark_metrics_private.h"


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


static const char  *ngx_http_bytemark_handler_names[] = {
    "", "tickets", "pass", "ingest", "purge", "status"
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


static const char  *ngx_http_bytemark_le[NGX_HTTP_BYTEMARK_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "+Inf"
};


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
