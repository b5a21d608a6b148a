
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * ngx_http_bytemark_module: transit tickets and passes served at the edge.
 *
 * The sources are laid out in layers, one folder and one header each, the
 * way nginx lays out its own tree (src/core, src/event, src/http); a layer
 * includes its own header and the headers of the layers below it, never
 * one above (src/LAYERS is the table, t/02-layers.t the check):
 *
 *   http/      the HTTP surface: module, directives and their merge, client
 *              input, one thin handler per endpoint, variables
 *   flow/      the resolution order of the reads, the micro-cache in front
 *              of it, the request's cleanup, the periodic cache cleanup
 *   response/  the one place that writes responses and SPEC errors
 *   mysql/     the MySQL side, on the event loop: pools, the non-blocking
 *              driver, prepared statements, rows
 *   mongo/     the MongoDB side, on the thread pool: client pool, batched
 *              lookups, fill and writes
 *   shm/       shared memory: per-user notes, the cleanup lock, circuit
 *              breakers, the micro-cache's zones, the metrics store and its
 *              renderings
 *   call/      the backend-call layer: thread pool or event loop, the time
 *              budget, resume, abandon
 *   render/    JSON in and out, no nginx request state: BSON values and rows
 *              to canonical JSON, filters, ingest bodies, JSON to BSON
 *   core/      this header: the types every layer shares, clocks, ids,
 *              directive parameters, and the small metrics interface the
 *              layers report through
 *
 * A request flows down: http -> flow -> call -> mongo or mysql, and the
 * answer comes back up through done() handlers into response.  A lower
 * layer reaches an upper one only through a pointer the upper one hands it:
 * a call's run/done/cancel, the call layer's event-loop poster (MySQL), the
 * response writer's micro-cache hooks.
 */

#ifndef _NGX_HTTP_BYTEMARK_CORE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_CORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
/*
 * ngx_thread_task_t and ngx_thread_pool_t, with or without --with-threads:
 * the module must compile against an nginx without threads, which runs a
 * MySQL-only configuration and refuses a MongoDB backend by name
 * (ngx_http_bytemark_check_threads()).
 */
#include <ngx_thread_pool.h>

#if (NGX_THREADS)
/*
 * Weak: the binary signature of --with-compat builds is the same with and
 * without threads, so a module built against a tree with threads may be
 * loaded by an nginx without them. dlopen() would then fail on "undefined
 * symbol: ngx_thread_task_post"; weak references load as NULL instead, and
 * the module refuses the configuration with a message that says why.
 */
#pragma weak ngx_thread_pool_add
#pragma weak ngx_thread_task_post
#endif

#include <jansson.h>


/*
 * The module's version: bumped with each user-visible change (CHANGELOG.md,
 * debian/changelog and t/86-version.t agree with it); the number is
 * major * 1000000 + minor * 1000 + patch, as nginx_version.
 */
#define NGX_HTTP_BYTEMARK_VERSION       "0.2.0"
#define ngx_http_bytemark_version       2000


#define NGX_HTTP_BYTEMARK_MAX_USER_ID   9007199254740991ULL  /* 2^53 - 1 */
#define NGX_HTTP_BYTEMARK_UUID_LEN      36
#define NGX_HTTP_BYTEMARK_STATUS_MAX    32
#define NGX_HTTP_BYTEMARK_ISO_LEN       64
/* deeper JSON and BSON are refused rather than risking a thread's stack */
#define NGX_HTTP_BYTEMARK_MAX_DEPTH     64

/* which handler a location runs */
#define NGX_HTTP_BYTEMARK_TICKETS       1
#define NGX_HTTP_BYTEMARK_PASS          2
#define NGX_HTTP_BYTEMARK_INGEST        3
#define NGX_HTTP_BYTEMARK_PURGE         4
#define NGX_HTTP_BYTEMARK_STATUS        5
#define NGX_HTTP_BYTEMARK_HEALTH        6

/* version filter of the tickets handler */
#define NGX_HTTP_BYTEMARK_V3            0x01
#define NGX_HTTP_BYTEMARK_V4            0x02


typedef struct ngx_http_bytemark_mongo_s      ngx_http_bytemark_mongo_t;
typedef struct ngx_http_bytemark_mysql_pool_s ngx_http_bytemark_mysql_pool_t;
typedef struct ngx_http_bytemark_call_s       ngx_http_bytemark_call_t;
typedef struct ngx_http_bytemark_ctx_s        ngx_http_bytemark_ctx_t;
typedef struct ngx_http_bytemark_shm_s        ngx_http_bytemark_shm_t;


/* breakers: MongoDB, then one per MySQL server */
#define NGX_HTTP_BYTEMARK_BREAKER_MONGO  0
#define NGX_HTTP_BYTEMARK_BREAKER_MYSQL  1
#define NGX_HTTP_BYTEMARK_BREAKERS       17

/* one validated pass of an ingest body */
typedef struct {
    u_char                        uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    ngx_uint_t                    version;
    ngx_int_t                     free_ticket_status;
    int64_t                       timestamp;
    char                         *status;        /* NUL-terminated */
    char                         *payload;       /* compact JSON, or NULL */
    char                          payload_hash[65];
    json_t                       *object;        /* as the cache stores it */
} ngx_http_bytemark_ingest_pass_t;


/* one "bytemark_mysql" directive */
typedef struct {
    ngx_str_t                     host;       /* or empty */
    ngx_str_t                     address;    /* host, resolved: text */
    ngx_str_t                     socket;     /* or empty */
    ngx_uint_t                    port;
    ngx_str_t                     user;
    ngx_str_t                     password;
    ngx_str_t                     database;
    ngx_uint_t                    pool_size;
    /* as written: "addr:port", "host:port" or "unix:/path" (logs, health) */
    ngx_str_t                     name;
    /* passive health: max_fails= (0: off), fail_timeout= */
    ngx_uint_t                    max_fails;
    ngx_msec_t                    fail_timeout;
    ngx_str_t                     password_file;  /* as written, or empty */
    ngx_uint_t                    weight;     /* its share of spread reads */
} ngx_http_bytemark_mysql_server_t;


/* bytemark_mysql_read: where reads go */
typedef enum {
    NGX_HTTP_BYTEMARK_READ_PRIMARY = 0,  /* the primary, replicas on failure */
    NGX_HTTP_BYTEMARK_READ_SPREAD        /* replicas by weight, then primary */
} ngx_http_bytemark_read_e;


typedef struct ngx_http_bytemark_main_conf_s  ngx_http_bytemark_main_conf_t;

/*
 * A backend: the http-level one (unnamed: "default"), and one more for each
 * "bytemark_upstream <name> { }" block, made by the same create function.
 */
struct ngx_http_bytemark_main_conf_s {
    ngx_str_t                     name;        /* empty: the default one */
    ngx_array_t                  *backends;    /* http level: named ones */

    ngx_str_t                     mongo_uri;
    ngx_str_t                     mongo_db;
    ngx_str_t                     mongo_coll;

    ngx_array_t                  *mysql_servers;
    ngx_str_t                     mysql_table;

    /* bytemark_mongo_uri_file: where mongo_uri was read from, or empty */
    ngx_str_t                     mongo_uri_file;

    /* bytemark_mysql_ssl*: TLS to the MySQL servers; files: full paths,
     * NUL-terminated, or empty */
    ngx_flag_t                    mysql_ssl;
    ngx_flag_t                    mysql_ssl_verify;    /* chain and name */
    ngx_str_t                     mysql_ssl_name;      /* or each host */
    ngx_str_t                     mysql_ssl_trusted_certificate;
    ngx_str_t                     mysql_ssl_certificate;
    ngx_str_t                     mysql_ssl_certificate_key;

    /* bytemark_mysql_read, bytemark_mysql_read_your_writes */
    ngx_uint_t                    mysql_read;
    ngx_msec_t                    mysql_rw;
    ngx_shm_zone_t               *recent_zone;  /* users who just wrote */

    ngx_str_t                     thread_pool_name;
    ngx_thread_pool_t            *thread_pool;

    /* per worker, created in init_process */
    ngx_http_bytemark_mongo_t    *mongo;
    ngx_http_bytemark_mysql_pool_t *mysql;

    /* bytemark_cache_cleanup */
    ngx_msec_t                    cleanup_interval;
    ngx_msec_t                    cleanup_max_age;

    /* bytemark_breaker, bytemark_stuck_calls */
    ngx_uint_t                    breaker_failures;
    ngx_msec_t                    breaker_open;
    ngx_uint_t                    stuck_calls;

    /* bytemark_mongo_batch: lookups one MongoDB task carries */
    ngx_uint_t                    mongo_batch;

    /* bytemark_mysql_batch: lookups one MySQL query answers */
    ngx_int_t                     mysql_batch;

    /* bytemark_notes_zone size= */
    size_t                        notes_size;

    /*
     * The largest budget a call of each backend may get in any location
     * that uses it, recorded as the locations are merged; the drivers' own
     * limits follow them (0: no such location, the defaults apply).
     */
    ngx_msec_t                    mongo_budget;
    ngx_msec_t                    mysql_budget;
    /* per worker: the MongoDB driver's per-operation limit, ms */
    ngx_msec_t                    mongo_limit;

    /* its locations' default budgets: the block's, else the http level's */
    ngx_msec_t                    mongo_timeout;
    ngx_msec_t                    mysql_timeout;

    /* per worker: abandoned calls still running, by breaker slot */
    ngx_uint_t                    stuck[NGX_HTTP_BYTEMARK_BREAKERS];
    /* per worker: the walk over the notes (flow/notes.c) */
    void                         *notes_walk;

    ngx_shm_zone_t               *shm_zone;
    ngx_shm_zone_t               *metrics_zone;
    ngx_array_t                  *microcaches;   /* of ngx_shm_zone_t * */
};


typedef struct {
    ngx_uint_t                    handler;

    ngx_msec_t                    mongo_timeout;
    ngx_msec_t                    mysql_timeout;
    ngx_msec_t                    cache_ttl;
    ngx_flag_t                    cache_fill;
    ngx_flag_t                    use_stale;
    ngx_int_t                     ingest_max_passes;
    ngx_shm_zone_t               *microcache;
    ngx_msec_t                    microcache_ttl;
    ngx_str_t                     cache_control; /* empty: "off" */

    ngx_http_complex_value_t     *user_id;
    ngx_http_complex_value_t     *pass_uuid;

    /* bytemark_health: the backends' names (ngx_str_t), NULL: the
     * location's; then the backends (ngx_http_bytemark_main_conf_t *) */
    ngx_array_t                  *health_backends;
    ngx_array_t                  *health_confs;
    /* bytemark_backend: the backend of the location's handler */
    ngx_str_t                     backend_name;
    ngx_http_bytemark_main_conf_t *backend;
} ngx_http_bytemark_loc_conf_t;


/* the backend a request's location uses */
#define ngx_http_bytemark_get_backend(r)                                      \
    ((ngx_http_bytemark_loc_conf_t *)                                         \
        ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module))->backend


/* parsed query arguments of the tickets handler */
typedef struct {
    ngx_array_t                  *statuses;   /* of ngx_str_t, or NULL */
    ngx_uint_t                    versions;   /* NGX_HTTP_BYTEMARK_V3|V4 */
} ngx_http_bytemark_filter_t;


/* how a backend call ended (its outcome: call.h) */
typedef enum {
    NGX_HTTP_BYTEMARK_FOUND = 0,
    NGX_HTTP_BYTEMARK_NOT_FOUND,
    NGX_HTTP_BYTEMARK_FAILED,        /* connect, query, pool */
    NGX_HTTP_BYTEMARK_MALFORMED,     /* a cache document we cannot render */
    NGX_HTTP_BYTEMARK_TIMED_OUT,     /* set by the event loop: budget spent */
    NGX_HTTP_BYTEMARK_NO_THREAD,     /* thread pool queue full */
    NGX_HTTP_BYTEMARK_CONFLICT,      /* ingest: a uuid of another user */
    NGX_HTTP_BYTEMARK_REFUSED        /* ingest: the table refused a value */
} ngx_http_bytemark_result_e;


/* growable malloc()ed text (render/) */
typedef struct {
    u_char                       *data;
    size_t                        len;
    size_t                        size;
} ngx_http_bytemark_jbuf_t;


/* one pass of a rendered array: its text, and what filters look at */
typedef struct {
    size_t                        start;        /* offset in the text */
    size_t                        len;
    u_char                        status[NGX_HTTP_BYTEMARK_STATUS_MAX];
    u_char                        uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    uint8_t                       status_len;
    unsigned                      has_status:1; /* a string, <= 32 bytes */
    unsigned                      has_uuid:1;   /* a string of 36 bytes */
} ngx_http_bytemark_item_t;


/*
 * A pass array rendered once (MongoDB: in the pool thread; MySQL: on the
 * event loop) as the canonical JSON the response carries:
 * "[{...},{...}]".  Handlers only pick items.
 */
typedef struct {
    ngx_http_bytemark_jbuf_t      text;
    ngx_http_bytemark_item_t     *items;
    ngx_uint_t                    n;
    ngx_uint_t                    nalloc;
} ngx_http_bytemark_passes_t;


/* a MySQL row, as text (SPEC 2); payload/hash data NULL for SQL NULL */
typedef struct {
    ngx_str_t                     uuid;
    ngx_str_t                     status;
    ngx_str_t                     payload;
    ngx_str_t                     hash;
    int64_t                       timestamp;
    int64_t                       free_ticket_status;
} ngx_http_bytemark_pass_row_t;


/*
 * MySQL rows kept for a cache fill (render/rows.c): copies, one malloc()ed
 * block per row, since the result buffers they come from do not outlive
 * the read.  The fill's thread makes them BSON.
 */
typedef struct {
    ngx_http_bytemark_pass_row_t *rows;
    ngx_uint_t                    n;
    ngx_uint_t                    nalloc;
} ngx_http_bytemark_rows_t;


/*
 * What a lookup answers (the call's outcome is the call's: call.h); filled
 * in a MongoDB thread or by MySQL on the event loop, read on the event loop.
 */
typedef struct {
    /* [0]: "passes" (version 3), [1]: "passes4"; a pass lookup from
     * MySQL has its one pass in the array of its version */
    ngx_http_bytemark_passes_t    passes[2];
    int64_t                       timestamp;    /* entry's, or read start */
    unsigned                      has_timestamp:1;
    unsigned                      incomplete:1;
    /* MySQL tickets: the rows too, for the cache fill that follows */
    unsigned                      keep_rows:1;
    ngx_http_bytemark_rows_t      rows[2];
} ngx_http_bytemark_answer_t;




struct ngx_http_bytemark_ctx_s {
    ngx_uint_t                    handler;
    uint64_t                      user_id;
    ngx_str_t                     user_id_text;
    u_char                        uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    ngx_http_bytemark_filter_t    filter;

    ngx_http_bytemark_call_t     *call;       /* in flight, or NULL */

    ngx_http_bytemark_answer_t    stale;      /* a stale cache entry */
    unsigned                      have_stale:1;
    unsigned                      mongo_failed:1;
    unsigned                      mongo_used:1;
    unsigned                      mysql_used:1;
    unsigned                      noted:1;      /* cache entry not trusted */
    ngx_uint_t                    mysql_server; /* the read's next try */
    ngx_uint_t                    mysql_first;  /* its first server */
    ngx_str_t                     mysql_answered; /* $bytemark_mysql_server */
    ngx_msec_t                    mysql_deadline;
    int64_t                       note_stamp;
    ngx_http_bytemark_ingest_pass_t *passes;    /* ingest */
    ngx_uint_t                    npasses;

    ngx_msec_t                    mongo_time;
    ngx_msec_t                    mysql_time;
    ngx_str_t                     source;
    ngx_str_t                     cache_status; /* micro-cache: HIT, ... */
    ngx_str_t                     mc_key;
    ngx_shm_zone_t               *mc_zone;
    ngx_event_t                  *mc_wait;
    ngx_queue_t                   mc_queue;     /* waiting, this worker */
    ngx_msec_t                    mc_waited;
    uint64_t                      mc_gen;       /* the refresh we own */
    unsigned                      mc_updating:1;
    unsigned                      mc_refresh:1; /* a background refresh */
    unsigned                      mc_served:1;  /* answered from the zone */
    unsigned                      mc_queued:1;
};


/*
 * The versions of the libraries the module runs with, as they report them:
 * the http layer asks the backend layers at init_module, the status page
 * (bytemark_build_info) reads them.  Static strings of the libraries.
 */
typedef struct {
    const char                   *mongoc;
    const char                   *mariadb;
    const char                   *jansson;
} ngx_http_bytemark_versions_t;


extern ngx_module_t                  ngx_http_bytemark_module;
extern ngx_http_bytemark_versions_t  ngx_http_bytemark_versions;


/* core: clocks, ids */
int64_t ngx_http_bytemark_now_ms(void);
void ngx_http_bytemark_iso_time(int64_t ms, char *buf);
ngx_int_t ngx_http_bytemark_parse_uuid(ngx_str_t *s, u_char *out);


/*
 * Directive parameters (ngx_http_bytemark_params.c).  A "name=value" table
 * fills the fields of a struct by offset, each name at most once; what went
 * wrong is returned, and the directive's parser says it in its own words.
 */
typedef enum {
    NGX_HTTP_BYTEMARK_PARAM_STR = 0,     /* ngx_str_t, as written */
    NGX_HTTP_BYTEMARK_PARAM_NUM,         /* ngx_uint_t, min .. max */
    NGX_HTTP_BYTEMARK_PARAM_MSEC,        /* ngx_msec_t, at least min */
    NGX_HTTP_BYTEMARK_PARAM_SIZE,        /* size_t, at least min */
    NGX_HTTP_BYTEMARK_PARAM_FLAG         /* ngx_flag_t, on | off */
} ngx_http_bytemark_param_type_e;

typedef struct {
    ngx_str_t                     name;         /* without the "=" */
    ngx_uint_t                    type;
    size_t                        offset;
    ngx_int_t                     min;
    ngx_int_t                     max;
} ngx_http_bytemark_param_t;

typedef enum {
    NGX_HTTP_BYTEMARK_PARAM_UNKNOWN = 1, /* no such name, or no "=" */
    NGX_HTTP_BYTEMARK_PARAM_REPEATED,
    NGX_HTTP_BYTEMARK_PARAM_INVALID      /* unparsable or out of bounds */
} ngx_http_bytemark_param_problem_e;

typedef struct {
    ngx_uint_t                    problem;
    ngx_uint_t                    arg;          /* index in cf->args */
    ngx_str_t                     value;        /* the part after "=" */
    ngx_http_bytemark_param_t    *param;        /* NULL when unknown */
} ngx_http_bytemark_param_err_t;

ngx_int_t ngx_http_bytemark_parse_params(ngx_conf_t *cf, ngx_uint_t first,
    ngx_http_bytemark_param_t *params, void *base,
    ngx_http_bytemark_param_err_t *err);
char *ngx_http_bytemark_conf_set_num_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_conf_check_bounds(ngx_conf_t *cf, void *post,
    void *data);
char *ngx_http_bytemark_conf_check_budget(ngx_conf_t *cf, void *post,
    void *data);


/*
 * The metrics' labels, which every layer reports with.  The store and its
 * functions are the shm layer's (shm/ngx_http_bytemark_shm.h); the call
 * layer, below it, reports through its observer (call.h).
 */

/* why a backend call failed: bytemark_backend_errors_total{kind} */
#define NGX_HTTP_BYTEMARK_ERR_NONE          0
#define NGX_HTTP_BYTEMARK_ERR_TIMEOUT       1
#define NGX_HTTP_BYTEMARK_ERR_CONNECT       2
#define NGX_HTTP_BYTEMARK_ERR_QUERY         3
#define NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN  4

/* the backends a call goes to, and the metrics' backend label */
typedef enum {
    NGX_HTTP_BYTEMARK_BACKEND_MONGO = 0,
    NGX_HTTP_BYTEMARK_BACKEND_MYSQL,
    NGX_HTTP_BYTEMARK_BACKENDS
} ngx_http_bytemark_backend_e;

/* counters without a home in the call layer, for metrics_inc()/_add() */
typedef enum {
    NGX_HTTP_BYTEMARK_M_MICROCACHE_HIT = 0,
    NGX_HTTP_BYTEMARK_M_MICROCACHE_MISS,
    NGX_HTTP_BYTEMARK_M_MICROCACHE_EXPIRED,
    NGX_HTTP_BYTEMARK_M_MICROCACHE_EVICTION,
    NGX_HTTP_BYTEMARK_M_MICROCACHE_INVALIDATION,
    NGX_HTTP_BYTEMARK_M_CLEANUP_RUNS,
    NGX_HTTP_BYTEMARK_M_CLEANUP_DELETED,
    NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_FILL,
    NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_INGEST,
    NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_PURGE,
    NGX_HTTP_BYTEMARK_M_N
} ngx_http_bytemark_metric_e;



#endif /* _NGX_HTTP_BYTEMARK_CORE_H_INCLUDED_ */
