
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Directive parameters: the "name=value" lists of bytemark_mysql,
 * bytemark_breaker, bytemark_cache_cleanup, bytemark_microcache and
 * bytemark_notes_zone go through one table-driven parser, and the directives
 * that take one bounded number use nginx's ngx_conf_set_num_slot with an
 * ngx_conf_num_bounds_t post whose handler names the directive.
 */


#include "ngx_http_bytemark_core.h"


static ngx_int_t ngx_http_bytemark_param_value(ngx_http_bytemark_param_t *p,
    ngx_str_t *v, u_char *field);
static char *ngx_http_bytemark_bounds_error(ngx_conf_t *cf,
    ngx_conf_num_bounds_t *b);


/*
 * Parses cf->args from index "first" on against the table (ended by an
 * empty name) into the struct at base.  NGX_ERROR: *err says which argument
 * and what; nothing is logged here, the caller names its directive.
 */

ngx_int_t
ngx_http_bytemark_parse_params(ngx_conf_t *cf, ngx_uint_t first,
    ngx_http_bytemark_param_t *params, void *base,
    ngx_http_bytemark_param_err_t *err)
{
    u_char                     *eq;
    uint64_t                    seen;
    ngx_str_t                  *value;
    ngx_uint_t                  i, k;
    ngx_http_bytemark_param_t  *p;

    value = cf->args->elts;
    seen = 0;

    for (i = first; i < cf->args->nelts; i++) {

        ngx_memzero(err, sizeof(ngx_http_bytemark_param_err_t));
        err->arg = i;

        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        if (eq == NULL) {
            err->problem = NGX_HTTP_BYTEMARK_PARAM_UNKNOWN;
            return NGX_ERROR;
        }

        err->value.data = eq + 1;
        err->value.len = value[i].data + value[i].len - (eq + 1);

        for (k = 0, p = params; p->name.len; k++, p++) {
            if ((size_t) (eq - value[i].data) == p->name.len
                && ngx_strncmp(value[i].data, p->name.data, p->name.len) == 0)
            {
                break;
            }
        }

        if (p->name.len == 0) {
            err->problem = NGX_HTTP_BYTEMARK_PARAM_UNKNOWN;
            return NGX_ERROR;
        }

        err->param = p;

        if (seen & ((uint64_t) 1 << k)) {
            err->problem = NGX_HTTP_BYTEMARK_PARAM_REPEATED;
            return NGX_ERROR;
        }

        seen |= (uint64_t) 1 << k;

        if (ngx_http_bytemark_param_value(p, &err->value,
                                          (u_char *) base + p->offset)
            != NGX_OK)
        {
            err->problem = NGX_HTTP_BYTEMARK_PARAM_INVALID;
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_param_value(ngx_http_bytemark_param_t *p, ngx_str_t *v,
    u_char *field)
{
    ngx_int_t   n;
    ssize_t     size;
    ngx_msec_t  ms;

    switch (p->type) {

    case NGX_HTTP_BYTEMARK_PARAM_STR:
        /* cf->args values are NUL-terminated: so is the tail of one */
        *(ngx_str_t *) field = *v;
        return NGX_OK;

    case NGX_HTTP_BYTEMARK_PARAM_NUM:
        n = ngx_atoi(v->data, v->len);
        if (n == NGX_ERROR || n < p->min || (p->max && n > p->max)) {
            return NGX_ERROR;
        }

        *(ngx_uint_t *) field = (ngx_uint_t) n;
        return NGX_OK;

    case NGX_HTTP_BYTEMARK_PARAM_MSEC:
        ms = ngx_parse_time(v, 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms < (ngx_msec_t) p->min) {
            return NGX_ERROR;
        }

        *(ngx_msec_t *) field = ms;
        return NGX_OK;

    case NGX_HTTP_BYTEMARK_PARAM_SIZE:
        size = ngx_parse_size(v);
        if (size == NGX_ERROR || size < p->min) {
            return NGX_ERROR;
        }

        *(size_t *) field = (size_t) size;
        return NGX_OK;

    default: /* NGX_HTTP_BYTEMARK_PARAM_FLAG */
        if (v->len == 2 && ngx_strncmp(v->data, "on", 2) == 0) {
            *(ngx_flag_t *) field = 1;
            return NGX_OK;
        }

        if (v->len == 3 && ngx_strncmp(v->data, "off", 3) == 0) {
            *(ngx_flag_t *) field = 0;
            return NGX_OK;
        }

        return NGX_ERROR;
    }
}


/*
 * ngx_conf_set_num_slot, with the bounds of its ngx_conf_num_bounds_t post
 * named also when the value is not a number at all.
 */

char *
ngx_http_bytemark_conf_set_num_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    if (cmd->post && ngx_atoi(value[1].data, value[1].len) == NGX_ERROR) {
        return ngx_http_bytemark_bounds_error(cf, cmd->post);
    }

    return ngx_conf_set_num_slot(cf, cmd, conf);
}


/*
 * The post_handler of the module's ngx_conf_num_bounds_t: nginx's own
 * ngx_conf_check_num_bounds() does not name the directive.
 */

char *
ngx_http_bytemark_conf_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t *b = post;
    ngx_int_t             *np = data;

    if (*np >= b->low && (b->high == -1 || *np <= b->high)) {
        return NGX_CONF_OK;
    }

    return ngx_http_bytemark_bounds_error(cf, b);
}


/* the post of a time budget (ngx_conf_set_msec_slot): 0 would never wait */

char *
ngx_http_bytemark_conf_check_budget(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t  *ms = data;

    ngx_str_t  *value;

    if (*ms > 0) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" must be greater than zero, not \"%V\"",
                       &value[0], &value[1]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_bytemark_bounds_error(ngx_conf_t *cf, ngx_conf_num_bounds_t *b)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    if (b->high == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be at least %i, not \"%V\"",
                           &value[0], b->low, &value[1]);

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be a number from %i to %i, not \"%V\"",
                           &value[0], b->low, b->high, &value[1]);
    }

    return NGX_CONF_ERROR;
}
