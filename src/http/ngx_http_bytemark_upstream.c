
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Named backends: "bytemark_upstream <name> { ... }" defines one, and
 * "bytemark_backend <name>;" makes the handler of a location use it.
 *
 * A backend is one more ngx_http_bytemark_main_conf_t, made by the same
 * create function as the http-level one (the unnamed backend, "default")
 * and initialised by the same code once the http block is parsed, so that
 * each has its own pools, batchers, breakers, stuck-call counts, notes
 * zone and cleanup.  The block is parsed with a handler of its own (as
 * nginx's "types {}" is) that gives the module's backend-level directives
 * (its http-level ones that write into the main conf) the backend's
 * instance, and with cf->ctx switched so that the module's main conf seen
 * from cf is the backend's as well.  "bytemark_mongo_timeout" and
 * "bytemark_mysql_timeout" in the block are the budgets of the locations
 * that use the backend and set none of their own.
 *
 * What the http level tunes (thread pool, breaker, stuck calls, batch
 * sizes, notes zone size, budgets) is inherited by the blocks that do not
 * set it; what a backend is (URI, collection, servers, table, cleanup) is
 * not.
 */


#include "ngx_http_bytemark_http.h"


static char *ngx_http_bytemark_upstream_directive(ngx_conf_t *cf,
    ngx_command_t *dummy, void *conf);
static ngx_command_t *ngx_http_bytemark_upstream_command(ngx_str_t *name);
static ngx_int_t ngx_http_bytemark_upstream_args(ngx_conf_t *cf,
    ngx_command_t *cmd);
static ngx_http_conf_ctx_t *ngx_http_bytemark_upstream_ctx(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *b);
static void ngx_http_bytemark_upstream_inherit(
    ngx_http_bytemark_main_conf_t *b, ngx_http_bytemark_main_conf_t *http);
static ngx_http_bytemark_main_conf_t *ngx_http_bytemark_upstream_named(
    ngx_http_bytemark_main_conf_t *http, ngx_str_t *name);


/* the name of the http-level backend, in bytemark_backend and variables */
static ngx_str_t  ngx_http_bytemark_default_name = ngx_string("default");


char *
ngx_http_bytemark_upstream(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_main_conf_t *http = conf;

    char                            *rv;
    ngx_str_t                       *value;
    ngx_conf_t                       save;
    ngx_http_conf_ctx_t             *ctx;
    ngx_http_bytemark_main_conf_t   *b, **slot;

    value = cf->args->elts;

    if (value[1].len == ngx_http_bytemark_default_name.len
        && ngx_strncmp(value[1].data, ngx_http_bytemark_default_name.data,
                       value[1].len) == 0)
    {
        return "cannot be named \"default\": that is the backend of the "
               "http-level directives";
    }

    if (ngx_http_bytemark_upstream_named(http, &value[1]) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate \"bytemark_upstream\" \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (http->backends == NULL) {
        http->backends = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_bytemark_main_conf_t *));
        if (http->backends == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    b = ngx_http_bytemark_create_main_conf(cf);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    b->name = value[1];

    slot = ngx_array_push(http->backends);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = b;

    ctx = ngx_http_bytemark_upstream_ctx(cf, b);
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    save = *cf;
    cf->ctx = ctx;
    cf->handler = ngx_http_bytemark_upstream_directive;
    cf->handler_conf = b;

    rv = ngx_conf_parse(cf, NULL);

    *cf = save;

    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (b->mongo_uri.len == 0 && b->mysql_servers == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_upstream\" \"%V\" has neither "
                           "\"bytemark_mongo_uri\" nor \"bytemark_mysql\"",
                           &b->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the http context, but for this module's main conf: the backend's */

static ngx_http_conf_ctx_t *
ngx_http_bytemark_upstream_ctx(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *b)
{
    ngx_http_conf_ctx_t  *ctx, *http_ctx;

    http_ctx = cf->ctx;

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_conf_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->main_conf = ngx_palloc(cf->pool, sizeof(void *) * ngx_http_max_module);
    if (ctx->main_conf == NULL) {
        return NULL;
    }

    ngx_memcpy(ctx->main_conf, http_ctx->main_conf,
               sizeof(void *) * ngx_http_max_module);
    ctx->main_conf[ngx_http_bytemark_module.ctx_index] = b;

    ctx->srv_conf = http_ctx->srv_conf;
    ctx->loc_conf = http_ctx->loc_conf;

    return ctx;
}


/*
 * One directive inside the block: a backend-level one of this module gets
 * the backend's conf; anything else is refused by name.
 */

static char *
ngx_http_bytemark_upstream_directive(ngx_conf_t *cf, ngx_command_t *dummy,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *b = conf;

    char           *rv;
    ngx_str_t      *value;
    ngx_command_t  *cmd, budget;

    value = cf->args->elts;

    /* a block's directives may be kept in a file of their own */
    if (cf->args->nelts == 2
        && value[0].len == sizeof("include") - 1
        && ngx_strncmp(value[0].data, "include", value[0].len) == 0)
    {
        return ngx_conf_include(cf, NULL, NULL);
    }

    cmd = ngx_http_bytemark_upstream_command(&value[0]);

    if (cmd == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" directive is not allowed in "
                           "\"bytemark_upstream\" (only a backend's "
                           "directives are: see the manual, Backends)",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_bytemark_upstream_args(cf, cmd) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid number of arguments in \"%V\" directive",
                           &value[0]);
        return NGX_CONF_ERROR;
    }

    if (cmd->conf == NGX_HTTP_LOC_CONF_OFFSET) {
        /* a budget: the default of the backend's locations */
        budget = *cmd;
        budget.offset = (cmd->offset
                         == offsetof(ngx_http_bytemark_loc_conf_t,
                                     mongo_timeout))
                        ? offsetof(ngx_http_bytemark_main_conf_t,
                                   mongo_timeout)
                        : offsetof(ngx_http_bytemark_main_conf_t,
                                   mysql_timeout);
        cmd = &budget;
    }

    rv = cmd->set(cf, cmd, b);

    if (rv == NGX_CONF_OK || rv == NGX_CONF_ERROR) {
        return rv;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\" directive %s",
                       &value[0], rv);

    return NGX_CONF_ERROR;
}


/*
 * The directives of a backend: the module's http-level directives that
 * write into its main conf, and the two budgets; NULL for any other.
 */

static ngx_command_t *
ngx_http_bytemark_upstream_command(ngx_str_t *name)
{
    ngx_command_t  *cmd;

    for (cmd = ngx_http_bytemark_module.commands; cmd->name.len; cmd++) {

        if (cmd->name.len != name->len
            || ngx_strncmp(cmd->name.data, name->data, name->len) != 0)
        {
            continue;
        }

        if ((cmd->type & NGX_HTTP_MAIN_CONF)
            && !(cmd->type & NGX_CONF_BLOCK)
            && cmd->conf == NGX_HTTP_MAIN_CONF_OFFSET)
        {
            return cmd;
        }

        if (cmd->conf == NGX_HTTP_LOC_CONF_OFFSET
            && cmd->set == ngx_conf_set_msec_slot
            && (cmd->offset == offsetof(ngx_http_bytemark_loc_conf_t,
                                        mongo_timeout)
                || cmd->offset == offsetof(ngx_http_bytemark_loc_conf_t,
                                           mysql_timeout)))
        {
            return cmd;
        }

        return NULL;
    }

    return NULL;
}


/* the argument count check of ngx_conf_handler(), which a handler skips */

static ngx_int_t
ngx_http_bytemark_upstream_args(ngx_conf_t *cf, ngx_command_t *cmd)
{
    ngx_uint_t  n;

    static ngx_uint_t  argument_number[] = {
        NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_CONF_TAKE3,
        NGX_CONF_TAKE4, NGX_CONF_TAKE5, NGX_CONF_TAKE6, NGX_CONF_TAKE7
    };

    n = cf->args->nelts;

    if (cmd->type & NGX_CONF_FLAG) {
        return (n == 2) ? NGX_OK : NGX_ERROR;
    }

    if (cmd->type & NGX_CONF_1MORE) {
        return (n >= 2) ? NGX_OK : NGX_ERROR;
    }

    if (cmd->type & NGX_CONF_2MORE) {
        return (n >= 3) ? NGX_OK : NGX_ERROR;
    }

    if (n > NGX_CONF_MAX_ARGS) {
        return NGX_ERROR;
    }

    return (cmd->type & argument_number[n - 1]) ? NGX_OK : NGX_ERROR;
}


/* init_main_conf: each named backend, after the http-level one */

char *
ngx_http_bytemark_init_upstreams(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *http)
{
    ngx_uint_t                       i, mongo;
    ngx_http_bytemark_main_conf_t  **named;

    if (http->backends == NULL) {
        return NGX_CONF_OK;
    }

    named = http->backends->elts;
    mongo = (http->mongo_uri.len != 0);

    for (i = 0; i < http->backends->nelts; i++) {
        mongo += (named[i]->mongo_uri.len != 0);

        /* each URI's credentials are scrubbed from the driver's messages */
        if (mongo > NGX_HTTP_BYTEMARK_MONGO_BACKENDS) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "more than %d backends with "
                               "\"bytemark_mongo_uri\" (bytemark_upstream "
                               "\"%V\")", NGX_HTTP_BYTEMARK_MONGO_BACKENDS,
                               &named[i]->name);
            return NGX_CONF_ERROR;
        }

        ngx_http_bytemark_upstream_inherit(named[i], http);

        if (ngx_http_bytemark_init_backend_conf(cf, named[i]) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void
ngx_http_bytemark_upstream_inherit(ngx_http_bytemark_main_conf_t *b,
    ngx_http_bytemark_main_conf_t *http)
{
    if (b->thread_pool_name.len == 0) {
        b->thread_pool_name = http->thread_pool_name;
    }

    ngx_conf_merge_uint_value(b->breaker_failures, http->breaker_failures, 5);
    ngx_conf_merge_msec_value(b->breaker_open, http->breaker_open, 2000);
    ngx_conf_merge_uint_value(b->stuck_calls, http->stuck_calls, 2);
    ngx_conf_merge_uint_value(b->mongo_batch, http->mongo_batch, 64);
    ngx_conf_merge_value(b->mysql_batch, http->mysql_batch, 32);

    if (b->notes_size == NGX_CONF_UNSET_SIZE) {
        b->notes_size = http->notes_size;
    }

    /* the http level's budgets, unless the block has its own */
    if (b->mongo_timeout == NGX_CONF_UNSET_MSEC) {
        b->mongo_timeout = http->mongo_timeout;
    }

    if (b->mysql_timeout == NGX_CONF_UNSET_MSEC) {
        b->mysql_timeout = http->mysql_timeout;
    }

    /* one set of micro-cache zones: ingest and purge drop from all */
    b->microcaches = http->microcaches;
}


/*
 * bytemark_backend, at merge: the backend by name; "default" (also when
 * none is given) is the http-level one.  Blocks may come after the locations that use them,
 * so the name is looked up only now.
 */

ngx_http_bytemark_main_conf_t *
ngx_http_bytemark_find_backend(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_http_bytemark_main_conf_t  *http, *b;

    http = ngx_http_conf_get_module_main_conf(cf, ngx_http_bytemark_module);

    if (name->len == ngx_http_bytemark_default_name.len
        && ngx_strncmp(name->data, ngx_http_bytemark_default_name.data,
                       name->len) == 0)
    {
        return http;
    }

    b = ngx_http_bytemark_upstream_named(http, name);

    if (b == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_backend\" \"%V\": no "
                           "\"bytemark_upstream %V\" is defined",
                           name, name);
    }

    return b;
}


/* $bytemark_backend */

ngx_str_t *
ngx_http_bytemark_backend_name(ngx_http_bytemark_main_conf_t *bmcf)
{
    return bmcf->name.len ? &bmcf->name : &ngx_http_bytemark_default_name;
}


static ngx_http_bytemark_main_conf_t *
ngx_http_bytemark_upstream_named(ngx_http_bytemark_main_conf_t *http,
    ngx_str_t *name)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_main_conf_t  **named;

    if (http->backends == NULL) {
        return NULL;
    }

    named = http->backends->elts;

    for (i = 0; i < http->backends->nelts; i++) {
        if (named[i]->name.len == name->len
            && ngx_strncmp(named[i]->name.data, name->data, name->len) == 0)
        {
            return named[i];
        }
    }

    return NULL;
}
