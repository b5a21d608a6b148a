
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The metrics in Prometheus text (SPEC 3.5): the families, the requests
 * and the histogram that ngx_http_bytemark_metrics_render() puts in the
 * order of the SPEC's table, then the breakers and the notes of each
 * backend.
 */


#include "ngx_http_bytemark_metrics_private.h"


static void ngx_http_bytemark_prom_header(ngx_http_bytemark_out_t *o,
    const char *name, const char *type, const char *help);


static void
ngx_http_bytemark_prom_header(ngx_http_bytemark_out_t *o, const char *name,
    const char *type, const char *help)
{
    ngx_http_bytemark_out(o, "# HELP %s %s\n# TYPE %s %s\n",
                          name, help, name, type);
}


void
ngx_http_bytemark_metrics_prom_family(ngx_http_bytemark_out_t *o,
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

void
ngx_http_bytemark_metrics_prom_requests(ngx_http_bytemark_out_t *o,
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

void
ngx_http_bytemark_metrics_prom_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m)
{
    ngx_uint_t         b, i;
    ngx_atomic_uint_t  n, sum;

    ngx_http_bytemark_prom_header(o, "bytemark_backend_duration_seconds",
        "histogram",
        "Duration of backend calls, from posting (MongoDB: to the thread "
        "pool; MySQL: to its connection pool, on the event loop) to "
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

    ngx_http_bytemark_prom_header(o, "bytemark_mongo_batch_size", "histogram",
        "MongoDB lookups carried by one find task.");

    for (i = 0, n = 0; i < NGX_HTTP_BYTEMARK_BATCH_BUCKETS; i++) {
        n += m->batch[i];

        if (i < NGX_HTTP_BYTEMARK_BATCH_BUCKETS - 1) {
            ngx_http_bytemark_out(o, "bytemark_mongo_batch_size_bucket"
                                  "{le=\"%ui\"} %uA\n", (ngx_uint_t) 1 << i, n);
        } else {
            ngx_http_bytemark_out(o, "bytemark_mongo_batch_size_bucket"
                                  "{le=\"+Inf\"} %uA\n", n);
        }
    }

    ngx_http_bytemark_out(o, "bytemark_mongo_batch_size_sum %uA\n"
                          "bytemark_mongo_batch_size_count %uA\n",
                          m->batch_sum, n);
}


void
ngx_http_bytemark_metrics_prom_build_info(ngx_http_bytemark_out_t *o)
{
    ngx_http_bytemark_versions_t  *v;

    v = &ngx_http_bytemark_versions;

    ngx_http_bytemark_prom_header(o, "bytemark_build_info", "gauge",
        "1, labelled with the versions of the module and of nginx and the "
        "libraries it runs with.");

    ngx_http_bytemark_out(o, "bytemark_build_info{version=\""
                          NGX_HTTP_BYTEMARK_VERSION "\",nginx=\""
                          NGINX_VERSION "\",mongoc=\"%s\",mariadb=\"%s\","
                          "jansson=\"%s\"} 1\n",
                          v->mongoc, v->mariadb, v->jansson);
}


/*
 * Not in the SPEC's table: 1 while a backend's circuit breaker is open and
 * its calls are skipped, 0 when it is closed or lets a probe through.  One
 * breaker for MongoDB, one per "bytemark_mysql" server, in their order;
 * the default backend's series without an "upstream" label, as before
 * named backends, then each block's with its name.
 */

void
ngx_http_bytemark_metrics_prom_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n)
{
    ngx_uint_t                      b, i, k;
    ngx_http_bytemark_main_conf_t  *bmcf;

    ngx_http_bytemark_prom_header(o, "bytemark_breaker_open", "gauge",
        "1 while the circuit breaker of a backend is open and its calls "
        "are skipped.");

    for (b = 0; b < n; b++) {
        bmcf = be[b].bmcf;
        ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE
                                         + be[b].label.len);

        if (bmcf->mongo_uri.len) {
            ngx_http_bytemark_out(o, "bytemark_breaker_open{%V"
                                  "backend=\"mongo\"} %d\n", &be[b].label,
                                  ngx_http_bytemark_breaker_is_open(bmcf,
                                      NGX_HTTP_BYTEMARK_BREAKER_MONGO)
                                  ? 1 : 0);
        }

        k = ngx_http_bytemark_breaker_servers(bmcf);

        for (i = 0; i < k; i++) {
            ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE
                                             + be[b].label.len);

            ngx_http_bytemark_out(o, "bytemark_breaker_open{%V"
                                  "backend=\"mysql\",server=\"%ui\"} %d\n",
                                  &be[b].label, i + 1,
                                  ngx_http_bytemark_breaker_is_open(bmcf,
                                      NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i)
                                  ? 1 : 0);
        }
    }
}


/*
 * Not in the SPEC's table either: the notes (users whose cache entry is
 * kept from lookups until it is deleted) and their zone's bytes, of each
 * backend, labelled as the breakers are.
 */

void
ngx_http_bytemark_metrics_prom_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n)
{
    ngx_uint_t  b;
    ngx_str_t  *l;

    ngx_http_bytemark_prom_header(o, "bytemark_notes", "gauge",
        "Users whose cache entry is kept from lookups until it is deleted "
        "(an ingest's cache update failed).");

    for (b = 0; b < n; b++) {
        l = &be[b].label;
        ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE + l->len);

        if (l->len == 0) {
            ngx_http_bytemark_out(o, "bytemark_notes %ui\n", be[b].notes);
            continue;
        }

        /* the label without its trailing comma */
        ngx_http_bytemark_out(o, "bytemark_notes{%*s} %ui\n",
                              l->len - 1, l->data, be[b].notes);
    }

    ngx_http_bytemark_prom_header(o, "bytemark_notes_zone_bytes", "gauge",
        "Bytes of bytemark_notes_zone in use and in free pages.");

    for (b = 0; b < n; b++) {
        l = &be[b].label;
        ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE
                                         + 2 * l->len);

        ngx_http_bytemark_out(o, "bytemark_notes_zone_bytes{%Vstate=\"used\"} "
                              "%uz\nbytemark_notes_zone_bytes{%Vstate=\"free\"}"
                              " %uz\n", l, be[b].used, l, be[b].free);
    }
}
