
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Configuration create/merge and the checks that make "nginx -t" reject a
 * configuration that could not work; the handler and thread pool
 * directives.  The other parsers are ngx_http_bytemark_directives.c.
 */


#include "ngx_http_bytemark_http.h"

#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


static char *ngx_http_bytemark_check_location(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_loc_conf_t *conf);
static void ngx_http_bytemark_record_budgets(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_loc_conf_t *conf);


void *
ngx_http_bytemark_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_bytemark_main_conf_t));
    if (bmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *     bmcf->mongo_uri = { 0, NULL };
     *     bmcf->mongo_db = { 0, NULL };
     *     bmcf->mysql_servers = NULL;
     *     bmcf->mysql_table = { 0, NULL };
     *     bmcf->thread_pool_name = { 0, NULL };
     *     bmcf->mongo_budget = 0;
     *     bmcf->mysql_budget = 0;
     */

    bmcf->breaker_failures = NGX_CONF_UNSET_UINT;
    bmcf->breaker_open = NGX_CONF_UNSET_MSEC;
    bmcf->stuck_calls = NGX_CONF_UNSET_UINT;
    bmcf->mongo_batch = NGX_CONF_UNSET_UINT;
    bmcf->mysql_batch = NGX_CONF_UNSET;
    bmcf->notes_size = NGX_CONF_UNSET_SIZE;
    bmcf->mongo_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->mysql_timeout = NGX_CONF_UNSET_MSEC;
    bmcf->mysql_ssl = NGX_CONF_UNSET;
    bmcf->mysql_ssl_verify = NGX_CONF_UNSET;
    bmcf->mysql_read = NGX_CONF_UNSET_UINT;
    bmcf->mysql_rw = NGX_CONF_UNSET_MSEC;

    return bmcf;
}


/* the http-level backend, then each named one (ngx_http_bytemark_upstream.c) */

char *
ngx_http_bytemark_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_http_bytemark_loc_conf_t  *hlcf;

    /*
     * The budgets written at the http level are the default backend's, and
     * those of the blocks that set none: a block's own beats them, as a
     * server's or a location's beats it.  They leave the merge chain here,
     * before the servers are merged, and come back at the end of it.
     */
    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_bytemark_module);

    bmcf->mongo_timeout = hlcf->mongo_timeout;
    bmcf->mysql_timeout = hlcf->mysql_timeout;
    hlcf->mongo_timeout = NGX_CONF_UNSET_MSEC;
    hlcf->mysql_timeout = NGX_CONF_UNSET_MSEC;

    if (ngx_http_bytemark_init_backend_conf(cf, bmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_bytemark_init_upstreams(cf, bmcf);
}


char *
ngx_http_bytemark_init_backend_conf(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    if (bmcf->mongo_db.len == 0) {
        ngx_str_set(&bmcf->mongo_db, "cache");
        ngx_str_set(&bmcf->mongo_coll, "bytemark_tickets_cache");
    }

    if (bmcf->mysql_table.len == 0) {
        ngx_str_set(&bmcf->mysql_table, "bytemark_pass");
    }

    if (bmcf->thread_pool_name.len == 0) {
        ngx_str_set(&bmcf->thread_pool_name, "default");
    }

    /* the defaults of SPEC 5's fault handling (README: Circuit breaker) */
    ngx_conf_init_uint_value(bmcf->breaker_failures, 5);
    ngx_conf_init_msec_value(bmcf->breaker_open, 2000);
    ngx_conf_init_uint_value(bmcf->stuck_calls, 2);
    ngx_conf_init_uint_value(bmcf->mongo_batch, 64);
    ngx_conf_init_value(bmcf->mysql_batch, 32);
    ngx_conf_init_uint_value(bmcf->mysql_read, NGX_HTTP_BYTEMARK_READ_PRIMARY);
    ngx_conf_init_msec_value(bmcf->mysql_rw, 5000);

    /* only spread reads may meet a lagging replica */
    if (bmcf->mysql_read == NGX_HTTP_BYTEMARK_READ_SPREAD && bmcf->mysql_rw
        && bmcf->mysql_servers && bmcf->mysql_servers->nelts > 1
        && ngx_http_bytemark_recent_add(cf, bmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_bytemark_check_mysql_ssl(cf, bmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (bmcf->mongo_uri.len == 0 && bmcf->mysql_servers == NULL) {
        return NGX_CONF_OK;
    }

    if (bmcf->cleanup_interval && bmcf->mongo_uri.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_cache_cleanup\" needs "
                           "\"bytemark_mongo_uri\"%s%V%s",
                           bmcf->name.len ? " in bytemark_upstream \"" : "",
                           &bmcf->name, bmcf->name.len ? "\"" : "");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_bytemark_shm_add(cf, bmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

#if (NGX_THREADS)
    /*
     * MongoDB calls and MySQL's TLS connects only: without either no pool
     * is looked up, so that a MySQL-only configuration without TLS starts
     * no threads; with one and no bytemark_thread_pool, nginx's "default"
     * pool
     */
    if ((bmcf->mongo_uri.len || (bmcf->mysql_ssl && bmcf->mysql_servers))
        && bmcf->thread_pool == NULL)
    {
        bmcf->thread_pool = ngx_thread_pool_add(cf, &bmcf->thread_pool_name);
        if (bmcf->thread_pool == NULL) {
            return NGX_CONF_ERROR;
        }
    }
#endif

    return NGX_CONF_OK;
}


/*
 * bytemark_thread_pool <name>: the pool is referenced while the directive
 * is parsed, so that nginx's own check of undefined pools ("unknown thread
 * pool") names this file and line, not the end of the http block.  A pool
 * named explicitly is checked even when no MongoDB backend would use it.
 */

char *
ngx_http_bytemark_set_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t  *bmcf = conf;

    ngx_str_t  *value;

    if (bmcf->thread_pool_name.len) {
        return "is duplicate";
    }

    if (ngx_http_bytemark_check_threads(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    bmcf->thread_pool_name = value[1];

#if (NGX_THREADS)
    bmcf->thread_pool = ngx_thread_pool_add(cf, &value[1]);
    if (bmcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }
#endif

    return NGX_CONF_OK;
}


void *
ngx_http_bytemark_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_bytemark_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_bytemark_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *     conf->handler = 0;
     *     conf->cache_control = { 0, NULL };
     */

    conf->mongo_timeout = NGX_CONF_UNSET_MSEC;
    conf->mysql_timeout = NGX_CONF_UNSET_MSEC;
    conf->cache_ttl = NGX_CONF_UNSET_MSEC;
    conf->cache_fill = NGX_CONF_UNSET;
    conf->use_stale = NGX_CONF_UNSET;
    conf->ingest_max_passes = NGX_CONF_UNSET;
    conf->microcache = NGX_CONF_UNSET_PTR;
    conf->user_id = NGX_CONF_UNSET_PTR;
    conf->pass_uuid = NGX_CONF_UNSET_PTR;

    return conf;
}


char *
ngx_http_bytemark_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_bytemark_loc_conf_t *prev = parent;
    ngx_http_bytemark_loc_conf_t *conf = child;

    ngx_http_bytemark_main_conf_t  *bmcf;

    /*
     * The budgets stay unset where neither the location nor its server
     * wrote one: the backend's block, else the http level, gives them
     * (below; ngx_http_bytemark_init_main_conf()).
     */
    ngx_conf_merge_msec_value(conf->mongo_timeout, prev->mongo_timeout,
                              NGX_CONF_UNSET_MSEC);
    ngx_conf_merge_msec_value(conf->mysql_timeout, prev->mysql_timeout,
                              NGX_CONF_UNSET_MSEC);
    ngx_conf_merge_str_value(conf->backend_name, prev->backend_name,
                             "default");
    ngx_conf_merge_msec_value(conf->cache_ttl, prev->cache_ttl, 0);
    ngx_conf_merge_value(conf->cache_fill, prev->cache_fill, 1);
    ngx_conf_merge_value(conf->use_stale, prev->use_stale, 1);
    ngx_conf_merge_value(conf->ingest_max_passes, prev->ingest_max_passes, 100);
    ngx_conf_merge_ptr_value(conf->user_id, prev->user_id, NULL);
    ngx_conf_merge_ptr_value(conf->pass_uuid, prev->pass_uuid, NULL);

    /* one user's passes must not be kept by a shared cache for another */
    ngx_conf_merge_str_value(conf->cache_control, prev->cache_control,
                             "private");

    if (conf->cache_control.len == 3
        && ngx_strncmp(conf->cache_control.data, "off", 3) == 0)
    {
        conf->cache_control.len = 0;
    }

    if (conf->microcache == NGX_CONF_UNSET_PTR) {
        conf->microcache = (prev->microcache == NGX_CONF_UNSET_PTR)
                           ? NULL : prev->microcache;
        conf->microcache_ttl = prev->microcache_ttl;
    }

    conf->backend = ngx_http_bytemark_find_backend(cf, &conf->backend_name);
    if (conf->backend == NULL) {
        return NGX_CONF_ERROR;
    }

    if (conf->handler) {
        bmcf = conf->backend;

        ngx_conf_init_msec_value(conf->mongo_timeout,
                                 bmcf->mongo_timeout != NGX_CONF_UNSET_MSEC
                                 ? bmcf->mongo_timeout : 300);
        ngx_conf_init_msec_value(conf->mysql_timeout,
                                 bmcf->mysql_timeout != NGX_CONF_UNSET_MSEC
                                 ? bmcf->mysql_timeout : 1000);

        ngx_http_bytemark_record_budgets(bmcf, conf);

        return ngx_http_bytemark_check_location(cf, bmcf, conf);
    }

    return NGX_CONF_OK;
}


/*
 * The drivers' own limits (set once per worker) must let the longest call
 * of any location finish: the merged budgets of the locations that use a
 * backend are known here, and only here (nginx merges no http{} level of
 * its own).  An ingest's cache update may get both of its budgets.
 */

static void
ngx_http_bytemark_record_budgets(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_http_bytemark_loc_conf_t *conf)
{
    ngx_msec_t  mongo;

    mongo = ngx_min(conf->mongo_timeout, NGX_MAX_INT32_VALUE);

    switch (conf->handler) {

    case NGX_HTTP_BYTEMARK_STATUS:
    case NGX_HTTP_BYTEMARK_HEALTH:
        return;

    case NGX_HTTP_BYTEMARK_INGEST:
        /* both below 2^31: no overflow; the drivers clamp the sum anyway */
        mongo += ngx_min(conf->mysql_timeout, NGX_MAX_INT32_VALUE);
        break;

    case NGX_HTTP_BYTEMARK_PURGE:
        bmcf->mongo_budget = ngx_max(bmcf->mongo_budget, mongo);
        return;

    default:
        break;
    }

    bmcf->mongo_budget = ngx_max(bmcf->mongo_budget, mongo);
    bmcf->mysql_budget = ngx_max(bmcf->mysql_budget, conf->mysql_timeout);
}


/* a handler without what it needs would fail every request: refuse it now */

static char *
ngx_http_bytemark_check_location(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_loc_conf_t *conf)
{
    const char                *name, *need;
    ngx_http_core_loc_conf_t  *clcf;

    if (conf->handler == NGX_HTTP_BYTEMARK_STATUS) {
        /* reads the metrics zone only: no backend, no user id */
        return NGX_CONF_OK;
    }

    if (conf->handler == NGX_HTTP_BYTEMARK_HEALTH) {
        /* reads the backends' shared state only: no user id */
        return ngx_http_bytemark_health_check(cf, bmcf, conf);
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    need = NULL;

    switch (conf->handler) {

    case NGX_HTTP_BYTEMARK_TICKETS:
    case NGX_HTTP_BYTEMARK_PASS:
        name = (conf->handler == NGX_HTTP_BYTEMARK_TICKETS)
               ? "bytemark_tickets" : "bytemark_pass";

        if (bmcf->mongo_uri.len == 0 && bmcf->mysql_servers == NULL) {
            need = "\"bytemark_mongo_uri\" or \"bytemark_mysql\"";
        }

        break;

    case NGX_HTTP_BYTEMARK_INGEST:
        name = "bytemark_ingest";

        if (bmcf->mysql_servers == NULL) {
            need = "\"bytemark_mysql\"";
        }

        break;

    default: /* NGX_HTTP_BYTEMARK_PURGE */
        name = "bytemark_purge";

        if (bmcf->mongo_uri.len == 0) {
            need = "\"bytemark_mongo_uri\"";
        }

        break;
    }

    if (need && bmcf->name.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" in location \"%V\" uses "
                           "bytemark_upstream \"%V\", which needs %s",
                           name, &clcf->name, &bmcf->name, need);
        return NGX_CONF_ERROR;
    }

    if (need == NULL && conf->user_id == NULL) {
        need = "\"bytemark_user_id\"";
    }

    if (need == NULL && conf->handler == NGX_HTTP_BYTEMARK_PASS
        && conf->pass_uuid == NULL)
    {
        need = "\"bytemark_pass_uuid\"";
    }

    if (need) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" in location \"%V\" needs %s",
                           name, &clcf->name, need);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_bytemark_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_loc_conf_t *blcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    static ngx_http_handler_pt  handlers[] = {
        NULL,
        ngx_http_bytemark_tickets_handler,
        ngx_http_bytemark_pass_handler,
        ngx_http_bytemark_ingest_handler,
        ngx_http_bytemark_purge_handler
    };

    if (blcf->handler) {
        return "is duplicate, or another bytemark handler is set";
    }

    blcf->handler = (ngx_uint_t) cmd->post;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = handlers[blcf->handler];

    return NGX_CONF_OK;
}
