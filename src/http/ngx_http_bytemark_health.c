
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_health [name ...]: GET/HEAD answers 200 when the backends can
 * serve and 503 when one cannot, with each server's state, for a load
 * balancer's or a readiness probe's polling.  It reads what the module
 * already knows, in shared memory: the MySQL servers' passive health
 * (max_fails=) and breakers, MongoDB's breaker.  No database round trip.
 *
 * A server is "down" while it is out of rotation or its breaker is open,
 * "probing" once that time is over and the next call is to probe it (so a
 * node whose servers were all down says 200 again by then, and the load
 * balancer's traffic brings the probes), "up" otherwise.
 */


#include "ngx_http_bytemark_http.h"


#define NGX_HTTP_BYTEMARK_STATE_UP       0
#define NGX_HTTP_BYTEMARK_STATE_DOWN     1
#define NGX_HTTP_BYTEMARK_STATE_PROBING  2


static u_char *ngx_http_bytemark_health_backend(
    ngx_http_bytemark_main_conf_t *bmcf, u_char *p, ngx_uint_t *ok,
    ngx_uint_t comma);
static const char *ngx_http_bytemark_health_text(ngx_http_request_t *r,
    ngx_array_t *backends);
static ngx_uint_t ngx_http_bytemark_health_server(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t slot);
static size_t ngx_http_bytemark_health_size(
    ngx_http_bytemark_main_conf_t *bmcf);


static const char  *ngx_http_bytemark_states[] = { "up", "down", "probing" };


char *
ngx_http_bytemark_set_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_loc_conf_t *blcf = conf;

    ngx_str_t                 *value, *name;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (blcf->handler) {
        return "is duplicate, or another bytemark handler is set";
    }

    blcf->handler = NGX_HTTP_BYTEMARK_HEALTH;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_bytemark_health_handler;

    if (cf->args->nelts == 1) {
        return NGX_CONF_OK;
    }

    blcf->health_backends = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                             sizeof(ngx_str_t));
    if (blcf->health_backends == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        name = ngx_array_push(blcf->health_backends);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = value[i];
    }

    return NGX_CONF_OK;
}


/*
 * At merge: the names are backends (without names: the location's own,
 * bytemark_backend or the default one), each with a backend to report on.
 */

char *
ngx_http_bytemark_health_check(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_loc_conf_t *conf)
{
    ngx_str_t                       *name;
    ngx_uint_t                       i, n;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_bytemark_main_conf_t  **b;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    n = conf->health_backends ? conf->health_backends->nelts : 1;

    conf->health_confs = ngx_array_create(cf->pool, n, sizeof(void *));
    if (conf->health_confs == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < n; i++) {
        b = ngx_array_push(conf->health_confs);
        if (b == NULL) {
            return NGX_CONF_ERROR;
        }

        if (conf->health_backends == NULL) {
            *b = bmcf;

        } else {
            name = conf->health_backends->elts;

            *b = ngx_http_bytemark_find_backend(cf, &name[i]);
            if (*b == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        if ((*b)->mongo_uri.len == 0 && (*b)->mysql_servers == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"bytemark_health\" in location \"%V\" needs "
                               "\"bytemark_mongo_uri\" or \"bytemark_mysql\"",
                               &clcf->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_bytemark_health_handler(ngx_http_request_t *r)
{
    u_char                          *p, *body;
    size_t                           size;
    ngx_int_t                        rc;
    ngx_str_t                        out, type;
    ngx_uint_t                       i, ok;
    ngx_http_bytemark_loc_conf_t    *blcf;
    ngx_http_bytemark_main_conf_t  **b;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_bytemark_send_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    b = blcf->health_confs->elts;

    size = sizeof("{\"status\":\"ok\",\"backends\":{}}");

    for (i = 0; i < blcf->health_confs->nelts; i++) {
        size += ngx_http_bytemark_health_size(b[i]);
    }

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ok = 1;

    p = ngx_cpymem(body, "{\"status\":\"ok\",\"backends\":{",
                   sizeof("{\"status\":\"ok\",\"backends\":{") - 1);

    for (i = 0; i < blcf->health_confs->nelts; i++) {
        p = ngx_http_bytemark_health_backend(b[i], p, &ok, i > 0);
    }

    *p++ = '}';
    *p++ = '}';

    if (!ok) {
        /* an error body has the SPEC's two keys: the states in words */
        return ngx_http_bytemark_response_error(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                   ngx_http_bytemark_health_text(r, blcf->health_confs));
    }

    out.data = body;
    out.len = p - body;

    ngx_str_set(&type, "application/json");

    return ngx_http_bytemark_send_state(r, NGX_HTTP_OK, &type, &out);
}


/* "name":{"mongo":{"state":..},"mysql":[{"server":..,"role":..,"state":..}]} */

static u_char *
ngx_http_bytemark_health_backend(ngx_http_bytemark_main_conf_t *bmcf,
    u_char *p, ngx_uint_t *ok, ngx_uint_t comma)
{
    ngx_str_t                         *name;
    ngx_uint_t                         i, n, state, serving;
    ngx_http_bytemark_mysql_server_t  *srv;

    name = ngx_http_bytemark_backend_name(bmcf);

    p = ngx_sprintf(p, "%s\"", comma ? "," : "");
    p = (u_char *) ngx_escape_json(p, name->data, name->len);
    p = ngx_cpymem(p, "\":{", 3);

    if (bmcf->mongo_uri.len) {
        state = ngx_http_bytemark_health_server(bmcf,
                                           NGX_HTTP_BYTEMARK_BREAKER_MONGO);
        *ok &= (state != NGX_HTTP_BYTEMARK_STATE_DOWN);

        p = ngx_sprintf(p, "\"mongo\":{\"state\":\"%s\"}",
                        ngx_http_bytemark_states[state]);
    }

    if (bmcf->mysql_servers) {
        if (bmcf->mongo_uri.len) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "\"mysql\":[", sizeof("\"mysql\":[") - 1);

        srv = bmcf->mysql_servers->elts;
        n = bmcf->mysql_servers->nelts;
        serving = 0;

        for (i = 0; i < n; i++) {
            state = ngx_http_bytemark_health_server(bmcf,
                                         NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i);
            serving |= (state != NGX_HTTP_BYTEMARK_STATE_DOWN);

            p = ngx_cpymem(p, "{\"server\":\"", sizeof("{\"server\":\"") - 1);
            p = (u_char *) ngx_escape_json(p, srv[i].name.data,
                                           srv[i].name.len);
            p = ngx_sprintf(p, "\",\"role\":\"%s\",\"state\":\"%s\"}%s",
                            i ? "replica" : "primary",
                            ngx_http_bytemark_states[state],
                            i + 1 < n ? "," : "");
        }

        *p++ = ']';
        *ok &= serving;
    }

    *p++ = '}';

    return p;
}


/*
 * The 503's message: each server's state in words, servers by role and
 * position, not by address (an error body names no host, SPEC 3).
 */

static const char *
ngx_http_bytemark_health_text(ngx_http_request_t *r, ngx_array_t *backends)
{
    u_char                          *text, *p;
    size_t                           size;
    ngx_str_t                       *name;
    ngx_uint_t                       i, k, n, state;
    ngx_http_bytemark_main_conf_t  **b, *bmcf;

    b = backends->elts;
    size = sizeof("not every backend can serve:");

    for (i = 0; i < backends->nelts; i++) {
        n = b[i]->mysql_servers ? b[i]->mysql_servers->nelts : 0;
        size += ngx_http_bytemark_backend_name(b[i])->len + 64
                + n * (sizeof(", replica 99 probing") - 1);
    }

    text = ngx_pnalloc(r->pool, size);
    if (text == NULL) {
        return "not every backend can serve";
    }

    p = ngx_cpymem(text, "not every backend can serve:",
                   sizeof("not every backend can serve:") - 1);

    for (i = 0; i < backends->nelts; i++) {
        bmcf = b[i];
        name = ngx_http_bytemark_backend_name(bmcf);

        p = ngx_sprintf(p, "%s %V:", i ? ";" : "", name);

        if (bmcf->mongo_uri.len) {
            state = ngx_http_bytemark_health_server(bmcf,
                                           NGX_HTTP_BYTEMARK_BREAKER_MONGO);
            p = ngx_sprintf(p, " mongo %s%s", ngx_http_bytemark_states[state],
                            bmcf->mysql_servers ? "," : "");
        }

        n = bmcf->mysql_servers ? bmcf->mysql_servers->nelts : 0;

        for (k = 0; k < n; k++) {
            state = ngx_http_bytemark_health_server(bmcf,
                                         NGX_HTTP_BYTEMARK_BREAKER_MYSQL + k);
            if (k == 0) {
                p = ngx_sprintf(p, " mysql primary %s",
                                ngx_http_bytemark_states[state]);

            } else {
                p = ngx_sprintf(p, ", replica %ui %s", k,
                                ngx_http_bytemark_states[state]);
            }
        }
    }

    *p = '\0';

    return (const char *) text;
}


/* a server's state: its breaker's and, for MySQL, its passive health's */

static ngx_uint_t
ngx_http_bytemark_health_server(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot)
{
    ngx_uint_t  health;

    health = ngx_http_bytemark_health_state(bmcf, slot);

    if (health == NGX_HTTP_BYTEMARK_HEALTH_DOWN
        || ngx_http_bytemark_breaker_is_open(bmcf, slot))
    {
        return NGX_HTTP_BYTEMARK_STATE_DOWN;
    }

    if (health == NGX_HTTP_BYTEMARK_HEALTH_PROBE
        || !ngx_http_bytemark_breaker_closed(bmcf, slot))
    {
        return NGX_HTTP_BYTEMARK_STATE_PROBING;
    }

    return NGX_HTTP_BYTEMARK_STATE_UP;
}


/* the body's length at most: each name escaped may grow sixfold */

static size_t
ngx_http_bytemark_health_size(ngx_http_bytemark_main_conf_t *bmcf)
{
    size_t                             size;
    ngx_uint_t                         i;
    ngx_http_bytemark_mysql_server_t  *srv;

    size = 128 + 6 * ngx_http_bytemark_backend_name(bmcf)->len;

    if (bmcf->mysql_servers) {
        srv = bmcf->mysql_servers->elts;

        for (i = 0; i < bmcf->mysql_servers->nelts; i++) {
            size += 64 + 6 * srv[i].name.len;
        }
    }

    return size;
}
