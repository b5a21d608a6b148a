
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The renderings of the metrics store (SPEC 3.5) for the status page: JSON
 * (metrics_json.c) and Prometheus text (metrics_prom.c), from the same
 * numbers, put here in the order of the SPEC's table, zeros included.
 * Gauges are the sums of the live workers' slots; breaker states are read
 * from the shared zone of shm.c.
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
static void ngx_http_bytemark_metrics_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t prometheus);


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
        ngx_http_bytemark_metrics_prom_breakers(&o, bmcf);
        ngx_http_bytemark_metrics_notes(&o, bmcf, 1);

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
        ngx_http_bytemark_metrics_notes(&o, bmcf, 0);

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


/*
 * Not in the SPEC's table: the notes (users whose cache entries lookups
 * skip until they are deleted) and their zone's bytes, in whole pages.
 */

static void
ngx_http_bytemark_metrics_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t prometheus)
{
    size_t      used, free;
    ngx_uint_t  notes;

    ngx_http_bytemark_notes_stats(bmcf, &notes, &used, &free);

    if (!prometheus) {
        ngx_http_bytemark_out(o, "\"bytemark_notes\":%ui,"
                              "\"bytemark_notes_zone_bytes\":"
                              "{\"used\":%uz,\"free\":%uz},",
                              notes, used, free);
        return;
    }

    ngx_http_bytemark_out(o, "# HELP bytemark_notes Users whose cache entry is "
                          "kept from lookups until it is deleted (an "
                          "ingest's cache update failed).\n"
                          "# TYPE bytemark_notes gauge\n"
                          "bytemark_notes %ui\n", notes);

    ngx_http_bytemark_out(o, "# HELP bytemark_notes_zone_bytes Bytes of "
                          "bytemark_notes_zone in use and in free pages.\n"
                          "# TYPE bytemark_notes_zone_bytes gauge\n"
                          "bytemark_notes_zone_bytes{state=\"used\"} %uz\n"
                          "bytemark_notes_zone_bytes{state=\"free\"} %uz\n",
                          used, free);
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
