
/*
 * ngx_http_bytemark_module: transit tickets and passes served at the edge.
 *
 * Architecture (one concern per file):
 *   ngx_http_bytemark_module.c     module definition, directives table,
 *                                  per-worker start and stop
 *   ngx_http_bytemark_conf.c       directive parsers, create/merge, checks
 *   ngx_http_bytemark_input.c      user id, pass uuid, query arguments
 *   ngx_http_bytemark_call.c       backend-call layer: a blocking call runs
 *                                  on the thread pool, the time budget runs
 *                                  on the event loop, the request resumes or
 *                                  the call is abandoned safely
 *   ngx_http_bytemark_lookup.c     resolution order shared by the read
 *                                  handlers: cache, MySQL, fill, stale, 503
 *   ngx_http_bytemark_tickets.c    handler: bytemark_tickets
 *   ngx_http_bytemark_pass.c       handler: bytemark_pass
 *   ngx_http_bytemark_ingest.c     handler: bytemark_ingest
 *   ngx_http_bytemark_purge.c      handler: bytemark_purge
 *   ngx_http_bytemark_body.c       ingest bodies: JSON, validation, defaults
 *   ngx_http_bytemark_cleanup.c    periodic cache cleanup, one worker at a time
 *   ngx_http_bytemark_shm.c        shared state: per-user cache notes,
 *                                  the cleanup lock, breaker states
 *   ngx_http_bytemark_breaker.c    a circuit breaker per backend
 *   ngx_http_bytemark_microcache.c whole answers in a shared zone, LRU,
 *                                  one lookup per key in flight
 *   ngx_http_bytemark_mongo.c      MongoDB: client pool, fill, writes
 *   ngx_http_bytemark_mongo_batch.c MongoDB lookups: one thread task
 *                                  carries the lookups queued meanwhile
 *   ngx_http_bytemark_mysql.c      MySQL: pool, prepared statements, rows
 *   ngx_http_bytemark_json.c       cache documents and MySQL rows to pass
 *                                  arrays; filters; JSON -> BSON for writes
 *   ngx_http_bytemark_render.c     the canonical JSON writer: BSON values,
 *                                  strings, numbers, payload text
 *   ngx_http_bytemark_response.c   the one place that writes responses
 *   ngx_http_bytemark_variables.c  $bytemark_* variables
 *   ngx_http_bytemark_metrics.c    shared-memory counters, histograms and
 *                                  gauges; JSON and Prometheus renderings
 *   ngx_http_bytemark_status.c     handler: bytemark_status
 */

#ifndef _NGX_HTTP_BYTEMARK_MODULE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
/*
 * ngx_thread_task_t and ngx_thread_pool_t, with or without --with-threads:
 * the module must compile against an nginx without threads so that it can
 * refuse it by name (ngx_http_bytemark_check_threads()).
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

typedef struct {
    ngx_atomic_t                  failures;     /* consecutive */
    ngx_atomic_t                  open_until;   /* ms; 0: closed */
    ngx_atomic_t                  probe_at;     /* ms; 0: no probe out */
} ngx_http_bytemark_breaker_t;


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
} ngx_http_bytemark_mysql_server_t;


typedef struct {
    ngx_str_t                     mongo_uri;
    ngx_str_t                     mongo_db;
    ngx_str_t                     mongo_coll;

    ngx_array_t                  *mysql_servers;
    ngx_str_t                     mysql_table;

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

    ngx_shm_zone_t               *shm_zone;
    ngx_shm_zone_t               *metrics_zone;
    ngx_array_t                  *microcaches;   /* of ngx_shm_zone_t * */
} ngx_http_bytemark_main_conf_t;


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

    ngx_http_complex_value_t     *user_id;
    ngx_http_complex_value_t     *pass_uuid;
} ngx_http_bytemark_loc_conf_t;


/* parsed query arguments of the tickets handler */
typedef struct {
    ngx_array_t                  *statuses;   /* of ngx_str_t, or NULL */
    ngx_uint_t                    versions;   /* NGX_HTTP_BYTEMARK_V3|V4 */
} ngx_http_bytemark_filter_t;


/* what a backend call produced; filled in a thread, read on the event loop */
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


/* growable malloc()ed text (render.c) */
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
 * A pass array rendered once, in the pool thread, as the canonical JSON
 * the response carries: "[{...},{...}]".  Handlers only pick items.
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


typedef struct {
    ngx_http_bytemark_result_e    result;
    /* [0]: "passes" (version 3), [1]: "passes4"; a pass lookup from
     * MySQL has its one pass in the array of its version */
    ngx_http_bytemark_passes_t    passes[2];
    int64_t                       timestamp;    /* entry's, or read start */
    unsigned                      has_timestamp:1;
    unsigned                      incomplete:1;
    int64_t                       count;        /* written, deleted */
    ngx_uint_t                    error_kind;   /* NGX_HTTP_BYTEMARK_ERR_* */
} ngx_http_bytemark_answer_t;


typedef void (*ngx_http_bytemark_call_run_pt)(ngx_http_bytemark_call_t *call);
typedef void (*ngx_http_bytemark_call_done_pt)(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call);


/*
 * A backend call.  It is allocated outside the request pool: the thread owns
 * it until the completion handler runs on the event loop, whatever happened
 * to the request meanwhile.
 */
struct ngx_http_bytemark_call_s {
    ngx_thread_task_t             task;
    ngx_event_t                   budget;

    ngx_http_request_t           *request;   /* NULL once abandoned */
    ngx_http_bytemark_call_run_pt run;
    ngx_http_bytemark_call_done_pt done;
    const char                   *name;      /* "mongo find", ... */
    ngx_uint_t                    backend;   /* from the name's first word */
    ngx_uint_t                    slot;      /* breaker: mongo, mysql #n */
    unsigned                      stuck:1;   /* abandoned, thread still busy */

    /*
     * MySQL calls run on the event loop: queued for a connection of their
     * server, then driven on it.  When the budget is spent, cancel() takes
     * a call that still waits out of the queue (NGX_OK); one that runs
     * (NGX_DECLINED) finishes its statement on the loop.
     */
    ngx_queue_t                   queue;
    void                         *conn;
    ngx_int_t                   (*cancel)(ngx_http_bytemark_call_t *call);

    ngx_http_bytemark_main_conf_t *bmcf;
    ngx_log_t                    *log;
    ngx_msec_t                    started;
    int64_t                       posted_us;  /* metrics: monotonic */
    ngx_msec_t                    elapsed;
    ngx_msec_t                    timeout;

    /* arguments */
    uint64_t                      user_id;
    u_char                        uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    ngx_http_bytemark_passes_t    fill_passes[2];
    int64_t                       fill_timestamp;
    ngx_http_bytemark_ingest_pass_t *passes;
    ngx_uint_t                    npasses;
    int64_t                       max_age;       /* cleanup */

    /* done() runs even when the request has gone (ingest, cleanup) */
    unsigned                      always_done:1;

    /*
     * MongoDB lookups (mongo_batch.c): a lookup is a member, carried by a
     * task (a call of its own, without a request); "batch" is the task
     * of a member that runs, NULL while it waits in the worker's queue.
     * A member is neither posted nor counted by the metrics itself: its
     * task is.
     */
    unsigned                      member:1;
    ngx_http_bytemark_call_t     *batch;
    ngx_http_bytemark_call_t    **members;      /* task: ngx_alloc()ed */
    ngx_uint_t                    nmembers;

    /* results */
    ngx_http_bytemark_answer_t    answer;
    char                          error[640];  /* cause, for the log */
    char                          refused[128];  /* REFUSED: for the client */
    unsigned                      cache_failed:1;
    char                          cache_error[640];
};


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
    ngx_uint_t                    mysql_server; /* the read's next server */
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


extern ngx_module_t  ngx_http_bytemark_module;


/* conf */
ngx_http_bytemark_loc_conf_t *ngx_http_bytemark_http_conf(ngx_cycle_t *cycle);
char *ngx_http_bytemark_set_mysql(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_mongo_uri(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_breaker(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_stuck_calls(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_mongo_batch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_collection(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_table(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_bytemark_set_cleanup(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void *ngx_http_bytemark_create_main_conf(ngx_conf_t *cf);
char *ngx_http_bytemark_init_main_conf(ngx_conf_t *cf, void *conf);
void *ngx_http_bytemark_create_loc_conf(ngx_conf_t *cf);
char *ngx_http_bytemark_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);

/* input */
ngx_int_t ngx_http_bytemark_parse_user_id(ngx_str_t *s, uint64_t *id);
ngx_int_t ngx_http_bytemark_parse_uuid(ngx_str_t *s, u_char *out);
ngx_int_t ngx_http_bytemark_parse_filter(ngx_http_request_t *r,
    ngx_http_bytemark_filter_t *f);
ngx_http_bytemark_ctx_t *ngx_http_bytemark_request_init(
    ngx_http_request_t *r, ngx_uint_t handler, ngx_uint_t methods,
    const char *allow, ngx_int_t *rc);
ngx_int_t ngx_http_bytemark_percent_decode(ngx_str_t *src, u_char *dst,
    size_t *len);

/* call layer */
ngx_http_bytemark_call_t *ngx_http_bytemark_call_create(ngx_http_request_t *r,
    const char *name, ngx_http_bytemark_call_run_pt run,
    ngx_http_bytemark_call_done_pt done, ngx_msec_t timeout);
ngx_int_t ngx_http_bytemark_call_post(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_started(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_finish(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_call_hold(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_call_blocked(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot);
void ngx_http_bytemark_call_free(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_stuck(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_answer_release(ngx_http_bytemark_answer_t *a);
ngx_int_t ngx_http_bytemark_request_cleanup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* lookup (resolution order of SPEC 3.1 / 3.2) */
ngx_int_t ngx_http_bytemark_lookup_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* handlers */
ngx_int_t ngx_http_bytemark_tickets_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_pass_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_ingest_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_purge_handler(ngx_http_request_t *r);

/* ingest bodies */
ngx_int_t ngx_http_bytemark_parse_ingest(const u_char *data, size_t len,
    ngx_uint_t max_passes, int64_t now,
    ngx_http_bytemark_ingest_pass_t **passes, ngx_uint_t *npasses,
    char *err, size_t size);
void ngx_http_bytemark_ingest_passes_free(
    ngx_http_bytemark_ingest_pass_t *passes, ngx_uint_t n);

/* shared state */
ngx_int_t ngx_http_bytemark_shm_add(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf);
ngx_int_t ngx_http_bytemark_note_set(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t stamp);
ngx_int_t ngx_http_bytemark_note_get(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t *stamp);
void ngx_http_bytemark_note_clear(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t upto);
ngx_int_t ngx_http_bytemark_cleanup_lock(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_msec_t interval);
void ngx_http_bytemark_cleanup_unlock(ngx_http_bytemark_main_conf_t *bmcf);

ngx_http_bytemark_breaker_t *ngx_http_bytemark_shm_breakers(
    ngx_http_bytemark_main_conf_t *bmcf);

/* circuit breakers */
ngx_int_t ngx_http_bytemark_breaker_allow(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend);
ngx_int_t ngx_http_bytemark_breaker_is_open(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t backend);
void ngx_http_bytemark_breaker_result(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend, ngx_uint_t ok, int64_t cost);

/* the cost of a failure that is a call stuck in a thread */
#define NGX_HTTP_BYTEMARK_BREAKER_STUCK  NGX_MAX_INT32_VALUE

/* micro-cache */
char *ngx_http_bytemark_set_microcache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_bytemark_microcache_lookup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
ngx_int_t ngx_http_bytemark_microcache_wait(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
void ngx_http_bytemark_microcache_store(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_str_t *body, ngx_str_t *etag);
void ngx_http_bytemark_microcache_release(ngx_http_bytemark_ctx_t *ctx);
void ngx_http_bytemark_lookup_finalize(ngx_http_request_t *r, ngx_int_t rc);
void ngx_http_bytemark_microcache_invalidate(
    ngx_http_bytemark_main_conf_t *bmcf, uint64_t user_id);

/* cleanup */
ngx_int_t ngx_http_bytemark_cleanup_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);

/* mongo */
ngx_int_t ngx_http_bytemark_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_mongo_exit_process(ngx_http_bytemark_main_conf_t *bmcf);
ngx_int_t ngx_http_bytemark_mongo_check_uri(ngx_str_t *uri, char *err,
    size_t size);
void ngx_http_bytemark_mongo_batch_init(void);
ngx_int_t ngx_http_bytemark_mongo_lookup(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_mongo_leave(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_fill(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_ingest(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_purge(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mongo_cleanup(ngx_http_bytemark_call_t *call);

/* mysql */
ngx_int_t ngx_http_bytemark_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_mysql_exit_process(ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_mysql_tickets(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mysql_pass(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mysql_ingest(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_mysql_post(ngx_http_bytemark_call_t *call);

/* json */
ngx_int_t ngx_http_bytemark_entry_from_bson(const void *doc,
    ngx_http_bytemark_answer_t *a, char *err, size_t size);
ngx_int_t ngx_http_bytemark_passes_add_row(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_pass_row_t *row);
ngx_int_t ngx_http_bytemark_filter_passes(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_filter_t *f, ngx_pool_t *pool, ngx_str_t *text);
ngx_http_bytemark_item_t *ngx_http_bytemark_find_pass(
    ngx_http_bytemark_answer_t *a, u_char *uuid, ngx_uint_t *version);
ngx_int_t ngx_http_bytemark_json_to_bson(void *doc, const char *key,
    json_t *v, ngx_uint_t depth);
json_t *ngx_http_bytemark_json_normalize(json_t *v);
int64_t ngx_http_bytemark_now_ms(void);
void ngx_http_bytemark_iso_time(int64_t ms, char *buf);

/* render */
ngx_int_t ngx_http_bytemark_jbuf_reserve(ngx_http_bytemark_jbuf_t *b,
    size_t n);
ngx_int_t ngx_http_bytemark_jbuf_add(ngx_http_bytemark_jbuf_t *b,
    const void *data, size_t n);
void ngx_http_bytemark_jbuf_free(ngx_http_bytemark_jbuf_t *b);
ngx_int_t ngx_http_bytemark_render_int(ngx_http_bytemark_jbuf_t *b,
    int64_t n);
ngx_int_t ngx_http_bytemark_render_string(ngx_http_bytemark_jbuf_t *b,
    const u_char *s, size_t len);
ngx_int_t ngx_http_bytemark_render_bson(ngx_http_bytemark_jbuf_t *b,
    const void *iter, ngx_uint_t depth);
ngx_int_t ngx_http_bytemark_render_passes(ngx_http_bytemark_passes_t *list,
    const void *iter);
ngx_int_t ngx_http_bytemark_render_payload(ngx_http_bytemark_jbuf_t *b,
    const u_char *text, size_t len);
ngx_uint_t ngx_http_bytemark_json_canonical(const u_char *text, size_t len);
ngx_http_bytemark_item_t *ngx_http_bytemark_passes_begin(
    ngx_http_bytemark_passes_t *list);
void ngx_http_bytemark_passes_end(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_item_t *item);
ngx_int_t ngx_http_bytemark_passes_close(ngx_http_bytemark_passes_t *list);
void ngx_http_bytemark_passes_text(ngx_http_bytemark_passes_t *list,
    ngx_str_t *text);
void ngx_http_bytemark_passes_free(ngx_http_bytemark_passes_t *list);

/* response */
ngx_int_t ngx_http_bytemark_send_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp);
ngx_int_t ngx_http_bytemark_send_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a);
ngx_int_t ngx_http_bytemark_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_bytemark_send_not_allowed(ngx_http_request_t *r,
    const char *allow);
ngx_int_t ngx_http_bytemark_send_written(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_uint_t written);
ngx_int_t ngx_http_bytemark_send_no_content(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_send_cached(ngx_http_request_t *r,
    ngx_str_t *body, ngx_str_t *etag, ngx_str_t *source);
ngx_int_t ngx_http_bytemark_unavailable(ngx_http_request_t *r);

/* variables */
ngx_int_t ngx_http_bytemark_add_variables(ngx_conf_t *cf);

/* metrics (ngx_http_bytemark_metrics.c) and status page */

/* why a backend call failed: bytemark_backend_errors_total{kind} */
#define NGX_HTTP_BYTEMARK_ERR_NONE          0
#define NGX_HTTP_BYTEMARK_ERR_TIMEOUT       1
#define NGX_HTTP_BYTEMARK_ERR_CONNECT       2
#define NGX_HTTP_BYTEMARK_ERR_QUERY         3
#define NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN  4

#define NGX_HTTP_BYTEMARK_BACKEND_MONGO     0
#define NGX_HTTP_BYTEMARK_BACKEND_MYSQL     1

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

#define ngx_http_bytemark_metrics_inc(metric)                                 \
    ngx_http_bytemark_metrics_add(metric, 1)

ngx_int_t ngx_http_bytemark_metrics_add_zone(ngx_conf_t *cf);
ngx_int_t ngx_http_bytemark_metrics_postconfiguration(ngx_conf_t *cf);
void ngx_http_bytemark_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_metrics_exit_process(void);
void ngx_http_bytemark_metrics_add(ngx_uint_t metric, ngx_uint_t n);
void ngx_http_bytemark_metrics_backend_error(ngx_uint_t backend,
    ngx_uint_t kind);
void ngx_http_bytemark_metrics_call_posted(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_call_timed_out(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_call_completed(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_mongo_pop(void);
void ngx_http_bytemark_metrics_mongo_push(void);
void ngx_http_bytemark_metrics_mysql_acquire(ngx_uint_t open);
void ngx_http_bytemark_metrics_mysql_release(ngx_uint_t open);
ngx_int_t ngx_http_bytemark_metrics_render(ngx_http_request_t *r,
    ngx_uint_t prometheus, ngx_str_t *body);
char *ngx_http_bytemark_set_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_bytemark_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_bytemark_send_body(ngx_http_request_t *r, ngx_str_t *type,
    ngx_str_t *body);


#endif /* _NGX_HTTP_BYTEMARK_MODULE_H_INCLUDED_ */
