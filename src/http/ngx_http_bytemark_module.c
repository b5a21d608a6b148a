
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Module definition: the directives table and the per-worker start and stop
 * of the backend pools.  The pools are created after fork() because the
 * MongoDB driver's monitor threads and MySQL sockets do not survive it.
 */


#include "ngx_http_bytemark_http.h"


static ngx_int_t ngx_http_bytemark_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_bytemark_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_bytemark_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_bytemark_init_backend(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
static void ngx_http_bytemark_exit_process(ngx_cycle_t *cycle);
static char *ngx_http_bytemark_header_value(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_post_handler_pt  ngx_http_bytemark_header_value_p =
    ngx_http_bytemark_header_value;

/*
 * bytemark_mongo_batch: lookups one MongoDB find task carries (1: one per
 * task); 1000 keeps a find's $in, and a thread's work, modest.
 * bytemark_stuck_calls: abandoned calls per server and worker before new
 * calls skip it; at least one, or a hung server would be skipped before it
 * ever hung a call.
 */
static ngx_conf_num_bounds_t  ngx_http_bytemark_1_to_1000 = {
    ngx_http_bytemark_conf_check_bounds, 1, 1000
};

/*
 * bytemark_mysql_batch: lookups one MySQL query answers (1: one query per
 * lookup); 256, the largest IN list a connection keeps prepared.
 */
static ngx_conf_num_bounds_t  ngx_http_bytemark_1_to_256 = {
    ngx_http_bytemark_conf_check_bounds, 1, 256
};

static ngx_conf_num_bounds_t  ngx_http_bytemark_at_least_1 = {
    ngx_http_bytemark_conf_check_bounds, 1, -1
};

static ngx_conf_post_t  ngx_http_bytemark_budget = {
    ngx_http_bytemark_conf_check_budget
};


static ngx_command_t  ngx_http_bytemark_commands[] = {

    { ngx_string("bytemark_mongo_uri"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_mongo_uri,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mongo_uri),
      NULL },

    { ngx_string("bytemark_mongo_uri_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_mongo_uri_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_mongo_collection"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_collection,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_mongo_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, mongo_timeout),
      &ngx_http_bytemark_budget },

    { ngx_string("bytemark_mysql"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_bytemark_set_mysql,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_mysql_read"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_mysql_read,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_mysql_read_your_writes"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_read_your_writes,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_rw),
      NULL },

    { ngx_string("bytemark_mysql_table"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_table,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_table),
      NULL },

    { ngx_string("bytemark_mysql_ssl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_http_bytemark_set_mysql_ssl,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_ssl),
      NULL },

    { ngx_string("bytemark_mysql_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_ssl_verify),
      NULL },

    { ngx_string("bytemark_mysql_ssl_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_ssl_name),
      NULL },

    { ngx_string("bytemark_mysql_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_ssl_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t,
               mysql_ssl_trusted_certificate),
      NULL },

    { ngx_string("bytemark_mysql_ssl_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_ssl_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_ssl_certificate),
      NULL },

    { ngx_string("bytemark_mysql_ssl_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_ssl_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_ssl_certificate_key),
      NULL },

    { ngx_string("bytemark_mysql_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, mysql_timeout),
      &ngx_http_bytemark_budget },

    { ngx_string("bytemark_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_thread_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, cache_ttl),
      NULL },

    { ngx_string("bytemark_cache_fill"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, cache_fill),
      NULL },

    { ngx_string("bytemark_use_stale"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, use_stale),
      NULL },

    { ngx_string("bytemark_cache_control"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, cache_control),
      &ngx_http_bytemark_header_value_p },

    { ngx_string("bytemark_user_id"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, user_id),
      NULL },

    { ngx_string("bytemark_pass_uuid"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, pass_uuid),
      NULL },

    { ngx_string("bytemark_tickets"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_bytemark_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) NGX_HTTP_BYTEMARK_TICKETS },

    { ngx_string("bytemark_pass"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_bytemark_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) NGX_HTTP_BYTEMARK_PASS },

    { ngx_string("bytemark_ingest"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_bytemark_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) NGX_HTTP_BYTEMARK_INGEST },

    { ngx_string("bytemark_purge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_bytemark_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) NGX_HTTP_BYTEMARK_PURGE },

    { ngx_string("bytemark_ingest_max_passes"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, ingest_max_passes),
      &ngx_http_bytemark_at_least_1 },

    { ngx_string("bytemark_microcache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_bytemark_set_microcache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_breaker"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_bytemark_set_breaker,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_mongo_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mongo_batch),
      &ngx_http_bytemark_1_to_1000 },

    { ngx_string("bytemark_mysql_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, mysql_batch),
      &ngx_http_bytemark_1_to_256 },

    { ngx_string("bytemark_stuck_calls"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_bytemark_main_conf_t, stuck_calls),
      &ngx_http_bytemark_1_to_1000 },

    { ngx_string("bytemark_cache_cleanup"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_bytemark_set_cleanup,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_notes_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_bytemark_set_notes_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_upstream"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_BLOCK|NGX_CONF_TAKE1,
      ngx_http_bytemark_upstream,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_backend"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_bytemark_loc_conf_t, backend_name),
      NULL },

    { ngx_string("bytemark_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_bytemark_set_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("bytemark_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_bytemark_set_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_bytemark_module_ctx = {
    ngx_http_bytemark_preconfiguration,    /* preconfiguration */
    ngx_http_bytemark_metrics_postconfiguration, /* postconfiguration */

    ngx_http_bytemark_create_main_conf,    /* create main configuration */
    ngx_http_bytemark_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_bytemark_create_loc_conf,     /* create location configuration */
    ngx_http_bytemark_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_bytemark_module = {
    NGX_MODULE_V1,
    &ngx_http_bytemark_module_ctx,         /* module context */
    ngx_http_bytemark_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_bytemark_init_module,         /* init module */
    ngx_http_bytemark_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_bytemark_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_bytemark_preconfiguration(ngx_conf_t *cf)
{

    return ngx_http_bytemark_add_variables(cf);
}


/*
 * MongoDB calls run on an nginx thread pool (mongo-c-driver has no
 * non-blocking API), and so do the connects of MySQL over TLS (the
 * library's handshake blocks); the rest of MySQL runs on the event loop and
 * needs none.  So only the directives that need a pool (bytemark_mongo_uri,
 * bytemark_mysql_ssl on, bytemark_thread_pool) refuse an nginx built
 * without --with-threads, by name, where they are written.  Either the module was built against such a tree (NGX_THREADS
 * unset), or it was built with threads and is loaded by an nginx without
 * them: its weak references to the thread pool functions are then NULL
 * (ngx_http_bytemark_core.h).
 */

ngx_int_t
ngx_http_bytemark_check_threads(ngx_conf_t *cf)
{
    ngx_str_t  *value;

#if (NGX_THREADS)
    if (ngx_thread_pool_add != NULL && ngx_thread_task_post != NULL) {
        return NGX_OK;
    }
#endif

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" needs nginx built with --with-threads "
                       "(ngx_http_bytemark_module runs MongoDB calls and "
                       "the connects of MySQL over TLS on a thread pool; a "
                       "configuration with MySQL only, without TLS, needs "
                       "none), and this nginx was built without threads",
                       &value[0]);

    return NGX_ERROR;
}


/*
 * The versions the module runs with, for bytemark_build_info, and once per
 * configuration in the error log: what an operator checks after an upgrade.
 */

static ngx_int_t
ngx_http_bytemark_init_module(ngx_cycle_t *cycle)
{
    ngx_http_bytemark_versions.mongoc = ngx_http_bytemark_mongo_version();
    ngx_http_bytemark_versions.mariadb = ngx_http_bytemark_mysql_version();
#if (JANSSON_VERSION_HEX >= 0x020d00)
    ngx_http_bytemark_versions.jansson = jansson_version_str();
#endif

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "bytemark module " NGX_HTTP_BYTEMARK_VERSION
                  " (nginx " NGINX_VERSION ", mongo-c-driver %s, "
                  "MariaDB Connector/C %s, jansson %s)",
                  ngx_http_bytemark_versions.mongoc,
                  ngx_http_bytemark_versions.mariadb,
                  ngx_http_bytemark_versions.jansson);

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_main_conf_t   *bmcf, **named;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    bmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_bytemark_module);
    if (bmcf == NULL) {
        return NGX_OK;
    }

    /* jansson picks its hash seed lazily; do it once before threads race */
    json_object_seed(0);

    ngx_http_bytemark_metrics_init_process(cycle, bmcf);

    if (ngx_http_bytemark_init_backend(cycle, bmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (bmcf->backends == NULL) {
        return NGX_OK;
    }

    named = bmcf->backends->elts;

    for (i = 0; i < bmcf->backends->nelts; i++) {
        if (ngx_http_bytemark_init_backend(cycle, named[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* one backend's pools, sweep and notes walk, per worker */

static ngx_int_t
ngx_http_bytemark_init_backend(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    if (bmcf->mongo_uri.len
        && ngx_http_bytemark_mongo_init_process(cycle, bmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (bmcf->mysql_servers
        && ngx_http_bytemark_mysql_init_process(cycle, bmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (bmcf->cleanup_interval
        && ngx_http_bytemark_cleanup_init_process(cycle, bmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* notes exist where an ingest updates a cache */
    if (bmcf->mongo_uri.len && bmcf->mysql_servers
        && ngx_http_bytemark_notes_init_process(cycle, bmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The thread pools are destroyed before this runs (ngx_thread_pool_module
 * comes first in the module order and waits for its queued tasks), so no
 * thread can be inside a driver call here.
 */

static void
ngx_http_bytemark_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_main_conf_t   *bmcf, **named;

    bmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_bytemark_module);
    if (bmcf == NULL) {
        return;
    }

    if (bmcf->backends) {
        named = bmcf->backends->elts;

        for (i = 0; i < bmcf->backends->nelts; i++) {
            ngx_http_bytemark_mongo_exit_process(named[i]);
            ngx_http_bytemark_mysql_exit_process(named[i]);
        }
    }

    ngx_http_bytemark_mongo_exit_process(bmcf);
    ngx_http_bytemark_mysql_exit_process(bmcf);
    ngx_http_bytemark_metrics_exit_process();
}


/*
 * A header value sent as written: a control character (a "\r\n" in a
 * quoted string) would end the header and start another one.
 */

static char *
ngx_http_bytemark_header_value(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *value = data;

    ngx_uint_t  i;

    if (value->len == 0) {
        return "is empty (\"off\" sends no header)";
    }

    for (i = 0; i < value->len; i++) {
        if ((value->data[i] < 0x20 && value->data[i] != '\t')
            || value->data[i] == 0x7f)
        {
            return "has a control character in its value";
        }
    }

    return NGX_CONF_OK;
}
