
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_status: GET/HEAD the metrics shared by all workers (SPEC 3.5),
 * as JSON, or with ?format=prometheus in the Prometheus text exposition
 * format 0.0.4.  The numbers and their rendering are
 * ngx_http_bytemark_metrics.c.
 *
 * The location needs no backend and no user id, only the metrics zone,
 * which the directive creates: a status-only server is a valid
 * configuration.  Protecting it (allow/deny) is the operator's part.
 */


#include "ngx_http_bytemark_http.h"


#define NGX_HTTP_BYTEMARK_FORMAT_JSON        0
#define NGX_HTTP_BYTEMARK_FORMAT_PROMETHEUS  1


static ngx_int_t ngx_http_bytemark_status_format(ngx_http_request_t *r);


char *
ngx_http_bytemark_set_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_loc_conf_t *blcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (blcf->handler) {
        return "is duplicate, or another bytemark handler is set";
    }

    blcf->handler = NGX_HTTP_BYTEMARK_STATUS;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_bytemark_status_handler;

    if (ngx_http_bytemark_metrics_add_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_bytemark_status_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc, format;
    ngx_str_t  body, type;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_bytemark_send_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    format = ngx_http_bytemark_status_format(r);

    if (format == NGX_ERROR) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_argument",
                                            "format must be json or "
                                            "prometheus");
    }

    if (ngx_http_bytemark_metrics_render(r,
            format == NGX_HTTP_BYTEMARK_FORMAT_PROMETHEUS, &body)
        != NGX_OK)
    {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                            "internal",
                                            "the metrics cannot be rendered");
    }

    if (format == NGX_HTTP_BYTEMARK_FORMAT_PROMETHEUS) {
        ngx_str_set(&type, "text/plain; version=0.0.4; charset=utf-8");

    } else {
        ngx_str_set(&type, "application/json");
    }

    return ngx_http_bytemark_send_body(r, &type, &body);
}


/* ?format=json|prometheus, JSON when absent */

static ngx_int_t
ngx_http_bytemark_status_format(ngx_http_request_t *r)
{
    ngx_str_t  arg;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) != NGX_OK) {
        return NGX_HTTP_BYTEMARK_FORMAT_JSON;
    }

    if (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0) {
        return NGX_HTTP_BYTEMARK_FORMAT_JSON;
    }

    if (arg.len == 10 && ngx_strncmp(arg.data, "prometheus", 10) == 0) {
        return NGX_HTTP_BYTEMARK_FORMAT_PROMETHEUS;
    }

    return NGX_ERROR;
}
