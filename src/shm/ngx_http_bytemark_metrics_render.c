
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The renderings of the metrics store (SPEC 3.5) for the status page: JSON
 * (metrics_json.c) and Prometheus text (metrics_prom.c), from the same
 * numbers, put here in the order of the SPEC's table, zeros included.
 * Gauges are the sums of the live workers' slots; breaker states and
 * notes are read from each backend's shared zone (shm.c): the default
 * backend's, then each "bytemark_upstream" block's, named.
 */


#include "ngx_http_bytemark_metrics_private.h"


/* the gauges of the live workers, summed */
typedef struct {
    int64_t                       calls;
    int64_t                       pool[NGX_HTTP_BYTEMARK_BACKENDS][2];
} ngx_http_bytemark_gauges_t;


static void ngx_http_bytemark_metrics_gauges(
    ngx_http_bytemark_metrics_shm_t *m, ngx_http_bytemark_gauges_t *g);
static void ngx_http_bytemark_metrics_values(
    ngx_http_bytemark_metrics_shm_t *m, int64_t *v);
static ngx_http_bytemark_metrics_backend_t *
    ngx_http_bytemark_metrics_backends(ngx_pool_t *pool,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t prometheus,
    ngx_uint_t *n);
static ngx_int_t ngx_http_bytemark_metrics_label(ngx_pool_t *pool,
    ngx_str_t *name, ngx_uint_t prometheus, ngx_str_t *label);


const char  *ngx_http_bytemark_handler_names[NGX_HTTP_BYTEMARK_HANDLERS] = {
    "", "tickets", "pass", "ingest", "purge", "status", "health"
};


const char  *ngx_http_bytemark_backends[NGX_HTTP_BYTEMARK_BACKENDS] = {
    "mongo", "mysql"
};

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
      "Tasks posted to the thread pool and not completed yet (queued or "
      "running): MongoDB calls, and the connects of MySQL over TLS; other "
      "MySQL work runs on the event loop.",
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


const char  *ngx_http_bytemark_le[NGX_HTTP_BYTEMARK_BUCKETS] = {
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
    int64_t                               values[NGX_HTTP_BYTEMARK_VALUES];
    int64_t                              *v;
    ngx_uint_t                            i, n;
    ngx_http_bytemark_out_t               o;
    ngx_http_bytemark_family_t           *f;
    ngx_http_bytemark_main_conf_t        *bmcf;
    ngx_http_bytemark_metrics_shm_t      *m;
    ngx_http_bytemark_metrics_backend_t  *be;

    m = ngx_http_bytemark_metrics_shm;
    bmcf = ngx_http_get_module_main_conf(r, ngx_http_bytemark_module);

    if (m == NULL) {
        return NGX_ERROR;
    }

    be = ngx_http_bytemark_metrics_backends(r->pool, bmcf, prometheus, &n);
    if (be == NULL) {
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
        ngx_http_bytemark_metrics_prom_requests(&o, m);

        for (i = 0; i < NGX_HTTP_BYTEMARK_FAMILIES; i++) {
            ngx_http_bytemark_metrics_prom_family(&o, &f[i], v);
            v += f[i].n[0] * f[i].n[1];

            if (i == 1) {
                /* after the errors, as in the table */
                ngx_http_bytemark_metrics_prom_histogram(&o, m);
            }
        }

        ngx_http_bytemark_metrics_prom_build_info(&o);
        ngx_http_bytemark_metrics_prom_breakers(&o, be, n);
        ngx_http_bytemark_metrics_prom_notes(&o, be, n);

    } else {
        ngx_http_bytemark_out(&o, "{");
        ngx_http_bytemark_metrics_json_requests(&o, m);

        for (i = 0; i < NGX_HTTP_BYTEMARK_FAMILIES; i++) {
            ngx_http_bytemark_metrics_json_family(&o, &f[i], v);
            v += f[i].n[0] * f[i].n[1];

            if (i == 1) {
                ngx_http_bytemark_metrics_json_histogram(&o, m);
            }
        }

        ngx_http_bytemark_metrics_json_build_info(&o);
        ngx_http_bytemark_metrics_json_breakers(&o, bmcf);
        ngx_http_bytemark_metrics_json_notes(&o, &be[0]);

        if (n > 1) {
            ngx_http_bytemark_metrics_json_upstreams(&o, &be[1], n - 1);
        }

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

void
ngx_http_bytemark_out(ngx_http_bytemark_out_t *o, const char *fmt, ...)
{
    va_list  args;

    ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE);

    if (o->failed) {
        return;
    }

    va_start(args, fmt);
    o->pos = ngx_vslprintf(o->pos, o->end, fmt, args);
    va_end(args);
}


/* room for size bytes: a line with a backend's name may be longer */

void
ngx_http_bytemark_out_reserve(ngx_http_bytemark_out_t *o, size_t size)
{
    u_char  *p;
    size_t   n;

    if (o->failed || (size_t) (o->end - o->pos) >= size) {
        return;
    }

    n = 2 * (o->end - o->start);

    while (n - (o->pos - o->start) < size) {
        n *= 2;
    }

    p = ngx_pnalloc(o->pool, n);
    if (p == NULL) {
        o->failed = 1;
        return;
    }

    o->pos = ngx_cpymem(p, o->start, o->pos - o->start);
    o->start = p;
    o->end = p + n;
}


/*
 * The backends whose breakers and notes the page shows: the default one,
 * then the "bytemark_upstream" blocks in their order, each with its notes
 * (users whose cache entries lookups skip until they are deleted) and its
 * notes zone's bytes, in whole pages.
 */

static ngx_http_bytemark_metrics_backend_t *
ngx_http_bytemark_metrics_backends(ngx_pool_t *pool,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t prometheus,
    ngx_uint_t *n)
{
    ngx_uint_t                             i;
    ngx_http_bytemark_main_conf_t        **named;
    ngx_http_bytemark_metrics_backend_t   *be;

    *n = 1 + (bmcf->backends ? bmcf->backends->nelts : 0);
    named = bmcf->backends ? bmcf->backends->elts : NULL;

    be = ngx_pcalloc(pool, *n * sizeof(ngx_http_bytemark_metrics_backend_t));
    if (be == NULL) {
        return NULL;
    }

    for (i = 0; i < *n; i++) {
        be[i].bmcf = (i == 0) ? bmcf : named[i - 1];

        if (i > 0
            && ngx_http_bytemark_metrics_label(pool, &be[i].bmcf->name,
                                               prometheus, &be[i].label)
               != NGX_OK)
        {
            return NULL;
        }

        ngx_http_bytemark_notes_stats(be[i].bmcf, &be[i].notes, &be[i].used,
                                      &be[i].free);
    }

    return be;
}


/*
 * A block's name as its series carry it.  nginx takes any token as a
 * name, quotes and backslashes included: Prometheus escapes \, " and a
 * line feed in a label value, JSON those and every control character.
 */

static ngx_int_t
ngx_http_bytemark_metrics_label(ngx_pool_t *pool, ngx_str_t *name,
    ngx_uint_t prometheus, ngx_str_t *label)
{
    u_char      *p, c;
    ngx_uint_t   i;

    static u_char  hex[] = "0123456789abcdef";

    /* the worst case: \u00XX for each byte, and the label around it */
    p = ngx_pnalloc(pool, 6 * name->len + sizeof("upstream=\"\","));
    if (p == NULL) {
        return NGX_ERROR;
    }

    label->data = p;

    if (prometheus) {
        p = ngx_cpymem(p, "upstream=\"", sizeof("upstream=\"") - 1);
    }

    for (i = 0; i < name->len; i++) {
        c = name->data[i];

        if (c == '\\' || c == '"') {
            *p++ = '\\';
            *p++ = c;

        } else if (c == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else if (c < 0x20 && !prometheus) {
            p = ngx_cpymem(p, "\\u00", 4);
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];

        } else {
            *p++ = c;
        }
    }

    if (prometheus) {
        *p++ = '"';
        *p++ = ',';
    }

    label->len = p - label->data;

    return NGX_OK;
}


/* the MySQL servers that have a breaker, the first ones */

ngx_uint_t
ngx_http_bytemark_breaker_servers(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t  n, max;

    n = bmcf->mysql_servers ? bmcf->mysql_servers->nelts : 0;
    max = NGX_HTTP_BYTEMARK_BREAKERS - NGX_HTTP_BYTEMARK_BREAKER_MYSQL;

    return ngx_min(n, max);
}
