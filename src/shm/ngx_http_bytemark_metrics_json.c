
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The metrics in JSON (SPEC 3.5): one object, the members in the order
 * that ngx_http_bytemark_metrics_render() gives them.  Each member ends
 * with a comma, and the brace that closes an object replaces the last
 * one's: no member has to know whether another follows.
 */


#include "ngx_http_bytemark_metrics_private.h"


/* "name": v, "name": {"a": v}, "name": {"a": {"x": v}}; each ends "," */

void
ngx_http_bytemark_metrics_json_family(ngx_http_bytemark_out_t *o,
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


void
ngx_http_bytemark_metrics_json_requests(ngx_http_bytemark_out_t *o,
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


void
ngx_http_bytemark_metrics_json_histogram(ngx_http_bytemark_out_t *o,
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
    ngx_http_bytemark_out(o, ",\"bytemark_mongo_batch_size\":{\"buckets\":{");

    for (i = 0, n = 0; i < NGX_HTTP_BYTEMARK_BATCH_BUCKETS - 1; i++) {
        n += m->batch[i];
        ngx_http_bytemark_out(o, "\"%ui\":%uA,", (ngx_uint_t) 1 << i, n);
    }

    n += m->batch[i];

    ngx_http_bytemark_out(o, "\"+Inf\":%uA},\"sum\":%uA,\"count\":%uA},",
                          n, m->batch_sum, n);
}


/* an info metric: its labels, by name, are its JSON */

void
ngx_http_bytemark_metrics_json_build_info(ngx_http_bytemark_out_t *o)
{
    ngx_http_bytemark_versions_t  *v;

    v = &ngx_http_bytemark_versions;

    ngx_http_bytemark_out(o, "\"bytemark_build_info\":{\"version\":\""
                          NGX_HTTP_BYTEMARK_VERSION "\",\"nginx\":\""
                          NGINX_VERSION "\",\"mongoc\":\"%s\","
                          "\"mariadb\":\"%s\",\"jansson\":\"%s\"},",
                          v->mongoc, v->mariadb, v->jansson);
}


/* "bytemark_breaker_open": {"mongo": 0, "mysql": {"1": 0, "2": 0}}, */

void
ngx_http_bytemark_metrics_json_breakers(ngx_http_bytemark_out_t *o,
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


/* "bytemark_notes": 3, "bytemark_notes_zone_bytes": {"used": u, "free": f}, */

void
ngx_http_bytemark_metrics_json_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be)
{
    ngx_http_bytemark_out(o, "\"bytemark_notes\":%ui,"
                          "\"bytemark_notes_zone_bytes\":"
                          "{\"used\":%uz,\"free\":%uz},",
                          be->notes, be->used, be->free);
}


/*
 * "bytemark_upstreams": {"tenant_a": {"bytemark_breaker_open": {...},
 * "bytemark_notes": n, "bytemark_notes_zone_bytes": {...}}, ...}, the
 * named backends in the order of their blocks; the top-level members
 * are the default backend's.
 */

void
ngx_http_bytemark_metrics_json_upstreams(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n)
{
    ngx_uint_t  b;

    ngx_http_bytemark_out(o, "\"bytemark_upstreams\":{");

    for (b = 0; b < n; b++) {
        ngx_http_bytemark_out_reserve(o, NGX_HTTP_BYTEMARK_OUT_LINE
                                         + be[b].label.len);
        ngx_http_bytemark_out(o, "\"%V\":{", &be[b].label);

        ngx_http_bytemark_metrics_json_breakers(o, be[b].bmcf);
        ngx_http_bytemark_metrics_json_notes(o, &be[b]);

        o->pos[-1] = '}';
        ngx_http_bytemark_out(o, ",");
    }

    o->pos[-1] = '}';
    ngx_http_bytemark_out(o, ",");
}
