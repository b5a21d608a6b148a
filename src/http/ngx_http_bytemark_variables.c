
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * $bytemark_source, $bytemark_user_id, $bytemark_mongo_time,
 * $bytemark_mysql_time, $bytemark_mysql_server and $bytemark_cache_status,
 * for log_format,
 * add_header and map.  Each is "not found" (logged as "-") when the request
 * did not get that far.
 */


#include "ngx_http_bytemark_http.h"


static ngx_int_t ngx_http_bytemark_variable_source(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_bytemark_variable_user_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_bytemark_variable_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_bytemark_variable_cache_status(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_bytemark_variable_mysql_server(
    ngx_http_request_t *r, ngx_http_variable_value_t *v, uintptr_t data);


#define NGX_HTTP_BYTEMARK_VAR_MONGO  0
#define NGX_HTTP_BYTEMARK_VAR_MYSQL  1


static ngx_http_variable_t  ngx_http_bytemark_vars[] = {

    { ngx_string("bytemark_source"), NULL,
      ngx_http_bytemark_variable_source, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("bytemark_user_id"), NULL,
      ngx_http_bytemark_variable_user_id, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("bytemark_mongo_time"), NULL,
      ngx_http_bytemark_variable_time, NGX_HTTP_BYTEMARK_VAR_MONGO,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("bytemark_mysql_time"), NULL,
      ngx_http_bytemark_variable_time, NGX_HTTP_BYTEMARK_VAR_MYSQL,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("bytemark_cache_status"), NULL,
      ngx_http_bytemark_variable_cache_status, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("bytemark_mysql_server"), NULL,
      ngx_http_bytemark_variable_mysql_server, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_bytemark_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_bytemark_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_variable_set(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_variable_source(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL || ctx->source.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_bytemark_variable_set(v, ctx->source.data,
                                          ctx->source.len);
}


/* only a valid id: whatever else the client sent stays out of the logs */

static ngx_int_t
ngx_http_bytemark_variable_user_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL || ctx->user_id == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_bytemark_variable_set(v, ctx->user_id_text.data,
                                          ctx->user_id_text.len);
}


/* seconds with millisecond resolution, like $upstream_response_time */

static ngx_int_t
ngx_http_bytemark_variable_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                   *p;
    ngx_msec_t                ms;
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL
        || (data == NGX_HTTP_BYTEMARK_VAR_MONGO && !ctx->mongo_used)
        || (data == NGX_HTTP_BYTEMARK_VAR_MYSQL && !ctx->mysql_used))
    {
        v->not_found = 1;
        return NGX_OK;
    }

    ms = (data == NGX_HTTP_BYTEMARK_VAR_MONGO) ? ctx->mongo_time
                                               : ctx->mysql_time;

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_bytemark_variable_set(v, p,
                           ngx_sprintf(p, "%T.%03M", (time_t) ms / 1000,
                                       ms % 1000) - p);
}


/*
 * HIT, MISS, EXPIRED, BYPASS; "not found" while the micro-cache is off.
 * An answer given before the micro-cache was even looked at (a 405, a bad
 * user id refused before any lookup) has no status of its own: with the
 * micro-cache on for the location it is BYPASS too (SPEC 3.5).
 */

static ngx_int_t
ngx_http_bytemark_variable_cache_status(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_bytemark_ctx_t       *ctx;
    ngx_http_bytemark_loc_conf_t  *blcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL || ctx->cache_status.len == 0) {
        blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

        if (blcf->handler && blcf->microcache) {
            return ngx_http_bytemark_variable_set(v, (u_char *) "BYPASS", 6);
        }

        v->not_found = 1;
        return NGX_OK;
    }

    return ngx_http_bytemark_variable_set(v, ctx->cache_status.data,
                                          ctx->cache_status.len);
}


/*
 * The MySQL server that answered: "addr:port" (the host as written) or
 * "unix:/path"; never its user or password.
 */

static ngx_int_t
ngx_http_bytemark_variable_mysql_server(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                            *p;
    ngx_http_bytemark_ctx_t           *ctx;
    ngx_http_bytemark_mysql_server_t  *srv;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL || ctx->mysql_answered == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    srv = ctx->mysql_answered;

    p = ngx_pnalloc(r->pool, srv->host.len + srv->socket.len
                             + sizeof("unix:") + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (srv->socket.len) {
        return ngx_http_bytemark_variable_set(v, p,
                               ngx_sprintf(p, "unix:%V", &srv->socket) - p);
    }

    return ngx_http_bytemark_variable_set(v, p,
                           ngx_sprintf(p, "%V:%ui", &srv->host, srv->port)
                           - p);
}
