
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The parsers of the directives that take more than nginx's own slot
 * functions: breakers, cleanup, the MongoDB URI and collection, the MySQL
 * servers and table (name=value lists through ngx_http_bytemark_params.c).
 * What a parser cannot know alone (the other directives, the locations) is
 * checked at merge (ngx_http_bytemark_conf.c).
 */


#include "ngx_http_bytemark_http.h"


/* bytemark_breaker [failures=<n>] [open=<time>] */

char *
ngx_http_bytemark_set_breaker(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t                      *value;
    ngx_http_bytemark_param_err_t   err;

    static ngx_http_bytemark_param_t  params[] = {
        { ngx_string("failures"), NGX_HTTP_BYTEMARK_PARAM_NUM,
          offsetof(ngx_http_bytemark_main_conf_t, breaker_failures), 1, 1000 },
        { ngx_string("open"), NGX_HTTP_BYTEMARK_PARAM_MSEC,
          offsetof(ngx_http_bytemark_main_conf_t, breaker_open), 1, 0 },
        { ngx_null_string, 0, 0, 0, 0 }
    };

    if (bmcf->breaker_failures != NGX_CONF_UNSET_UINT
        || bmcf->breaker_open != NGX_CONF_UNSET_MSEC)
    {
        return "is duplicate";
    }

    if (ngx_http_bytemark_parse_params(cf, 1, params, bmcf, &err) == NGX_OK) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"bytemark_breaker\" has an invalid parameter "
                       "\"%V\" (expected failures=<1..1000> and/or "
                       "open=<time>, each once)", &value[err.arg]);
    return NGX_CONF_ERROR;
}


/* bytemark_cache_cleanup interval=<time> max_age=<time> | off */

char *
ngx_http_bytemark_set_cleanup(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t                      *value;
    ngx_http_bytemark_param_err_t   err;

    static ngx_http_bytemark_param_t  params[] = {
        { ngx_string("interval"), NGX_HTTP_BYTEMARK_PARAM_MSEC,
          offsetof(ngx_http_bytemark_main_conf_t, cleanup_interval), 1, 0 },
        { ngx_string("max_age"), NGX_HTTP_BYTEMARK_PARAM_MSEC,
          offsetof(ngx_http_bytemark_main_conf_t, cleanup_max_age), 1, 0 },
        { ngx_null_string, 0, 0, 0, 0 }
    };

    if (bmcf->cleanup_interval || bmcf->cleanup_max_age) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        return NGX_CONF_OK;
    }

    if (ngx_http_bytemark_parse_params(cf, 1, params, bmcf, &err) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_cache_cleanup\" has an invalid "
                           "parameter \"%V\" (expected interval=<time> "
                           "max_age=<time> or off)", &value[err.arg]);
        return NGX_CONF_ERROR;
    }

    if (bmcf->cleanup_interval == 0 || bmcf->cleanup_max_age == 0) {
        return "needs both \"interval=\" and \"max_age=\", or \"off\"";
    }

    return NGX_CONF_OK;
}


char *
ngx_http_bytemark_set_mongo_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    char        err[256];
    char       *rv;
    ngx_str_t  *value;

    if (bmcf->mongo_uri_file.len) {
        return "conflicts with \"bytemark_mongo_uri_file\"";
    }

    /* its calls run on a thread pool */
    if (ngx_http_bytemark_check_threads(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = cf->args->elts;

    /* the driver's message may repeat the password: err comes scrubbed */
    if (ngx_http_bytemark_mongo_check_uri(&value[1], err, sizeof(err))
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mongo_uri\" is not a valid MongoDB "
                           "connection string: %s", err);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_bytemark_set_collection(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    u_char     *dot;
    ngx_str_t  *value;

    if (bmcf->mongo_db.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    dot = ngx_strlchr(value[1].data, value[1].data + value[1].len, '.');

    if (dot == NULL || dot == value[1].data
        || dot == value[1].data + value[1].len - 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mongo_collection\" must be "
                           "\"<database>.<collection>\", not \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the driver wants NUL-terminated names; cf->args values are */
    bmcf->mongo_db.len = dot - value[1].data;
    bmcf->mongo_db.data = ngx_pnalloc(cf->pool, bmcf->mongo_db.len + 1);
    if (bmcf->mongo_db.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(bmcf->mongo_db.data, value[1].data, bmcf->mongo_db.len);
    bmcf->mongo_db.data[bmcf->mongo_db.len] = '\0';

    bmcf->mongo_coll.data = dot + 1;
    bmcf->mongo_coll.len = value[1].len - bmcf->mongo_db.len - 1;

    return NGX_CONF_OK;
}


/* the table name is spliced into SQL text, so only plain identifiers pass */

char *
ngx_http_bytemark_set_table(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char        *rv;
    ngx_str_t   *value;
    ngx_uint_t   i, dots;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    value = cf->args->elts;
    dots = 0;

    for (i = 0; i < value[1].len; i++) {
        u_char  c = value[1].data[i];

        if (c == '.' && i > 0 && i < value[1].len - 1 && dots++ == 0) {
            continue;
        }

        if (!(c == '_' || c == '$' || (c >= '0' && c <= '9')
              || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"bytemark_mysql_table\" must be a plain "
                               "identifier ([A-Za-z0-9_$], optionally "
                               "<database>.<table>), not \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0) {
        return "must not be empty";
    }

    return NGX_CONF_OK;
}


/* bytemark_mysql_read primary | spread (ngx_http_bytemark_mysql_choose.c) */

char *
ngx_http_bytemark_set_mysql_read(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t  *value;

    if (bmcf->mysql_read != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "primary") == 0) {
        bmcf->mysql_read = NGX_HTTP_BYTEMARK_READ_PRIMARY;

    } else if (ngx_strcmp(value[1].data, "spread") == 0) {
        bmcf->mysql_read = NGX_HTTP_BYTEMARK_READ_SPREAD;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql_read\" must be \"primary\" or "
                           "\"spread\", not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* bytemark_mysql_read_your_writes <time> | off */

char *
ngx_http_bytemark_set_read_your_writes(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (bmcf->mysql_rw != NGX_CONF_UNSET_MSEC) {
            return "is duplicate";
        }

        bmcf->mysql_rw = 0;
        return NGX_CONF_OK;
    }

    return ngx_conf_set_msec_slot(cf, cmd, conf);
}
