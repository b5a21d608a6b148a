
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MongoDB: one mongoc_client_pool_t per worker, created after fork (its
 * monitor threads would not survive fork()), and the operations the pool
 * threads run: the cache fill, the cache side of an ingest, purge and
 * cleanup.  Lookups are in ngx_http_bytemark_mongo_batch.c, the cache side
 * of an ingest in ngx_http_bytemark_mongo_ingest.c.
 *
 * The driver's own timeouts are bounded by defaults added to the URI when
 * the operator did not set them, so that a thread stuck in the driver is
 * released in bounded time even after its request was answered: the
 * socket timeout follows the largest MongoDB budget of the locations
 * (recorded at merge time), and a thread never waits for a pooled client
 * longer than its call's budget.
 */


#include "ngx_http_bytemark_mongo_private.h"


/* socketTimeoutMS: twice the largest budget, within these bounds */
#define NGX_HTTP_BYTEMARK_MONGO_CONNECT_MS    1000
#define NGX_HTTP_BYTEMARK_MONGO_SOCKET_MS     1000
#define NGX_HTTP_BYTEMARK_MONGO_SOCKET_MAX    3600000
/* bytemark_mongo_timeout's default, when no location uses MongoDB */
#define NGX_HTTP_BYTEMARK_MONGO_BUDGET        300
/* a thread that finds no free client looks again after this, at most */
#define NGX_HTTP_BYTEMARK_MONGO_POP_PAUSE     16
#define NGX_HTTP_BYTEMARK_MONGO_SELECTION_MS  1000
#define NGX_HTTP_BYTEMARK_MONGO_HEARTBEAT_MS  2000


/* read-only after init_process; bson_t wants 128-byte alignment */
bson_t  *ngx_http_bytemark_mongo_upsert_opts;
bson_t  *ngx_http_bytemark_mongo_write_opts;

/* per worker: the backends with a MongoDB, each with its own pool */
static ngx_uint_t  ngx_http_bytemark_mongo_backends;



static mongoc_uri_t *ngx_http_bytemark_mongo_uri(ngx_str_t *s,
    bson_error_t *error);
static ngx_msec_t ngx_http_bytemark_mongo_limit(
    ngx_http_bytemark_main_conf_t *bmcf);
static int64_t ngx_http_bytemark_mongo_clock(void);
static void ngx_http_bytemark_mongo_default(mongoc_uri_t *uri,
    const char *option, int32_t value);
static void ngx_http_bytemark_mongo_delete(ngx_http_bytemark_call_t *call,
    bson_t *filter);
static void ngx_http_bytemark_mongo_write_entry(ngx_http_bytemark_call_t *call);


ngx_int_t
ngx_http_bytemark_mongo_check_uri(ngx_str_t *uri, char *err, size_t size)
{
    mongoc_uri_t  *u;
    bson_error_t   error;

    /* the driver's warnings while parsing, scrubbed as well */
    mongoc_log_set_handler(ngx_http_bytemark_mongo_log, NULL);
    ngx_http_bytemark_mongo_secrets(uri);

    u = ngx_http_bytemark_mongo_uri(uri, &error);
    if (u == NULL) {
        /* scrubbed before it is cut short: no piece of a secret is left */
        ngx_http_bytemark_mongo_scrub(error.message, sizeof(error.message));
        ngx_cpystrn((u_char *) err, (u_char *) error.message, size);
    }

    ngx_http_bytemark_mongo_secrets(NULL);

    if (u == NULL) {
        return NGX_ERROR;
    }

    mongoc_uri_destroy(u);

    return NGX_OK;
}


static mongoc_uri_t *
ngx_http_bytemark_mongo_uri(ngx_str_t *s, bson_error_t *error)
{
    char          *cstr;
    mongoc_uri_t  *uri;

    cstr = bson_strndup((const char *) s->data, s->len);

    uri = mongoc_uri_new_with_error(cstr, error);

    bson_free(cstr);

    return uri;
}


/* the mongo-c-driver loaded, not the one built against */

const char *
ngx_http_bytemark_mongo_version(void)
{
    return mongoc_get_version();
}


ngx_int_t
ngx_http_bytemark_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    bson_error_t                error;
    ngx_http_bytemark_mongo_t  *mongo;

    if (ngx_http_bytemark_mongo_backends++ == 0) {
        mongoc_init();
        mongoc_log_set_handler(ngx_http_bytemark_mongo_log, NULL);

        /*
         * Writes: the driver's client-side key check is off ("validate":
         * false).  It refuses keys that JSON allows and MongoDB stores
         * inside a payload ("", "a.b", "$x"); the server is the judge of
         * what it stores, and a refusal there is a failed cache write like
         * any other.
         */
        ngx_http_bytemark_mongo_upsert_opts = BCON_NEW("upsert",
                                            BCON_BOOL(true),
                                            "validate", BCON_BOOL(false));
        ngx_http_bytemark_mongo_write_opts = BCON_NEW("validate",
                                                      BCON_BOOL(false));
    }

    ngx_http_bytemark_mongo_secrets(&bmcf->mongo_uri);

    mongo = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_mongo_t));
    if (mongo == NULL) {
        return NGX_ERROR;
    }

    mongo->uri = ngx_http_bytemark_mongo_uri(&bmcf->mongo_uri, &error);
    if (mongo->uri == NULL) {
        ngx_http_bytemark_mongo_scrub(error.message, sizeof(error.message));
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: invalid MongoDB URI: %s", error.message);
        return NGX_ERROR;
    }

    ngx_http_bytemark_mongo_default(mongo->uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                    NGX_HTTP_BYTEMARK_MONGO_CONNECT_MS);
    bmcf->mongo_limit = ngx_http_bytemark_mongo_limit(bmcf);

    ngx_http_bytemark_mongo_default(mongo->uri, MONGOC_URI_SOCKETTIMEOUTMS,
                                    (int32_t) bmcf->mongo_limit);
    ngx_http_bytemark_mongo_default(mongo->uri,
                                    MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                    NGX_HTTP_BYTEMARK_MONGO_SELECTION_MS);
    ngx_http_bytemark_mongo_default(mongo->uri,
                                    MONGOC_URI_HEARTBEATFREQUENCYMS,
                                    NGX_HTTP_BYTEMARK_MONGO_HEARTBEAT_MS);

    if (!mongoc_uri_has_option(mongo->uri, MONGOC_URI_APPNAME)) {
        mongoc_uri_set_appname(mongo->uri, "ngx_http_bytemark");
    }

    mongo->pool = mongoc_client_pool_new(mongo->uri);
    if (mongo->pool == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: cannot create the MongoDB client pool");
        mongoc_uri_destroy(mongo->uri);
        return NGX_ERROR;
    }

    mongoc_client_pool_set_error_api(mongo->pool, MONGOC_ERROR_API_VERSION_2);

    mongo->db = bson_strndup((const char *) bmcf->mongo_db.data,
                             bmcf->mongo_db.len);
    mongo->coll = bson_strndup((const char *) bmcf->mongo_coll.data,
                               bmcf->mongo_coll.len);

    /* the same for every lookup: built once, read by all threads */
    mongo->find_opts = BCON_NEW("projection", "{",
                                    "passesLog", BCON_INT32(0),
                                    "passes4Log", BCON_INT32(0),
                                "}",
                                "limit", BCON_INT64(1),
                                "singleBatch", BCON_BOOL(true));
    /* a batch: every document of its users, first one per user wins */
    mongo->batch_opts = BCON_NEW("projection", "{",
                                     "passesLog", BCON_INT32(0),
                                     "passes4Log", BCON_INT32(0),
                                 "}");

    ngx_http_bytemark_mongo_batch_init(mongo, bmcf->mongo_batch);

    bmcf->mongo = mongo;

    return NGX_OK;
}


/*
 * socketTimeoutMS unless the URI sets it: twice the largest budget a
 * MongoDB call gets in any location, clamped before the cast to int32_t
 * (the driver takes 0 and negative values as "no timeout").
 */

static ngx_msec_t
ngx_http_bytemark_mongo_limit(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_msec_t  budget;

    budget = bmcf->mongo_budget ? bmcf->mongo_budget
                                : NGX_HTTP_BYTEMARK_MONGO_BUDGET;

    budget = ngx_min(budget, NGX_HTTP_BYTEMARK_MONGO_SOCKET_MAX / 2);

    return ngx_max(NGX_HTTP_BYTEMARK_MONGO_SOCKET_MS, 2 * budget);
}


static void
ngx_http_bytemark_mongo_default(mongoc_uri_t *uri, const char *option,
    int32_t value)
{
    if (!mongoc_uri_has_option(uri, option)) {
        mongoc_uri_set_option_as_int32(uri, option, value);
    }
}


void
ngx_http_bytemark_mongo_exit_process(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = bmcf->mongo;
    if (mongo == NULL) {
        return;
    }

    bmcf->mongo = NULL;

    ngx_http_bytemark_mongo_batch_exit(mongo);
    mongoc_client_pool_destroy(mongo->pool);
    mongoc_uri_destroy(mongo->uri);
    bson_free(mongo->db);
    bson_free(mongo->coll);
    bson_destroy(mongo->find_opts);
    bson_destroy(mongo->batch_opts);

    /* the driver goes with the last backend's pool */
    if (--ngx_http_bytemark_mongo_backends) {
        return;
    }

    bson_destroy(ngx_http_bytemark_mongo_upsert_opts);
    ngx_http_bytemark_mongo_upsert_opts = NULL;
    bson_destroy(ngx_http_bytemark_mongo_write_opts);
    ngx_http_bytemark_mongo_write_opts = NULL;

    mongoc_cleanup();

    /* the driver's threads are gone: nothing logs through it any more */
    ngx_http_bytemark_mongo_secrets(NULL);
}


/*
 * thread: a client from the worker's pool and the cache collection.  With
 * maxPoolSize clients out (a URI may set it below the thread count), the
 * thread waits for one no longer than "wait" (its call's budget), then the
 * call fails as any MongoDB error does: mongoc_client_pool_pop() would
 * wait until a client came back, however long its holder is stuck.
 */

mongoc_collection_t *
ngx_http_bytemark_mongo_acquire(ngx_http_bytemark_mongo_t *mongo,
    mongoc_client_t **client, ngx_msec_t wait, bson_error_t *error)
{
    int64_t     deadline;
    ngx_msec_t  pause;

    deadline = ngx_http_bytemark_mongo_clock() + (int64_t) wait;
    pause = 1;

    for ( ;; ) {
        *client = mongoc_client_pool_try_pop(mongo->pool);

        if (*client != NULL) {
            break;
        }

        if (ngx_http_bytemark_mongo_clock() >= deadline) {
            bson_set_error(error, MONGOC_ERROR_CLIENT,
                           MONGOC_ERROR_CLIENT_NOT_READY,
                           "no MongoDB client free in the pool within %u ms "
                           "(maxPoolSize)", (unsigned) wait);
            return NULL;
        }

        ngx_msleep(pause);
        pause = ngx_min(2 * pause, NGX_HTTP_BYTEMARK_MONGO_POP_PAUSE);
    }

    ngx_http_bytemark_metrics_mongo_pop();

    return mongoc_client_get_collection(*client, mongo->db, mongo->coll);
}


/* thread: a monotonic clock, ms */

static int64_t
ngx_http_bytemark_mongo_clock(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


void
ngx_http_bytemark_mongo_release(ngx_http_bytemark_mongo_t *mongo,
    mongoc_client_t *client, mongoc_collection_t *coll)
{
    mongoc_collection_destroy(coll);
    ngx_http_bytemark_metrics_mongo_push();
    mongoc_client_pool_push(mongo->pool, client);
}


/*
 * thread: rewrite the entry from a MySQL answer, its rows made BSON here
 * (render/rows.c) as the passes a lookup of it answers.
 *
 * The filter matches only an entry older than the MySQL read, or one whose
 * timestamp is missing or not a number (a malformed entry, a miss: SPEC
 * 3.1), so a newer one written meanwhile is never overwritten: then
 * the upsert tries to insert a second document for the user and the unique
 * index on user_id refuses it, which is the expected outcome, not an error.
 */

void
ngx_http_bytemark_mongo_fill(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mongo_write_entry(call);

    if (call->error[0]) {
        /* a fill that lost on the duplicate key leaves no error */
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_FILL);
    }
}


/* the write itself; its failures are counted by the caller, above */

static void
ngx_http_bytemark_mongo_write_entry(ngx_http_bytemark_call_t *call)
{
    bson_t                      filter, update, or, clause, cmp, not, set;
    bson_t                          unset;
    bson_error_t                    error;
    mongoc_client_t                *client;
    mongoc_collection_t            *coll;
    ngx_http_bytemark_mongo_t      *mongo;
    ngx_http_bytemark_call_fill_t  *fill;

    mongo = call->bmcf->mongo;
    fill = ngx_http_bytemark_call_fill(call);

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "timestamp", &cmp);
    BSON_APPEND_INT64(&cmp, "$lt", fill->timestamp);
    bson_append_document_end(&clause, &cmp);
    bson_append_document_end(&or, &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "timestamp", &cmp);
    BSON_APPEND_DOCUMENT_BEGIN(&cmp, "$not", &not);
    BSON_APPEND_UTF8(&not, "$type", "number");
    bson_append_document_end(&cmp, &not);
    bson_append_document_end(&clause, &cmp);
    bson_append_document_end(&or, &clause);
    bson_append_array_end(&filter, &or);

    bson_init(&update);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_INT64(&set, "user_id", (int64_t) call->user_id);
    BSON_APPEND_INT64(&set, "timestamp", fill->timestamp);

    if (ngx_http_bytemark_rows_to_bson(&set, "passes", &fill->rows[0])
        != NGX_OK
        || ngx_http_bytemark_rows_to_bson(&set, "passes4", &fill->rows[1])
           != NGX_OK)
    {
        snprintf(call->error, sizeof(call->error),
                 "passes cannot be converted to BSON");
        bson_destroy(&update);
        bson_destroy(&filter);
        return;
    }

    bson_append_document_end(&update, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$unset", &unset);
    BSON_APPEND_UTF8(&unset, "bytemark_incomplete", "");
    bson_append_document_end(&update, &unset);

    coll = ngx_http_bytemark_mongo_acquire(mongo, &client, call->timeout,
                                           &error);
    if (coll == NULL) {
        ngx_http_bytemark_mongo_error(call, &error);
        bson_destroy(&update);
        bson_destroy(&filter);
        return;
    }

    if (!mongoc_collection_update_one(coll, &filter, &update,
                                      ngx_http_bytemark_mongo_upsert_opts, NULL,
                                      &error)
        && error.code != MONGOC_ERROR_DUPLICATE_KEY)
    {
        ngx_http_bytemark_mongo_error(call, &error);
    }

    ngx_http_bytemark_mongo_release(mongo, client, coll);

    bson_destroy(&update);
    bson_destroy(&filter);
}


void
ngx_http_bytemark_mongo_error(ngx_http_bytemark_call_t *call,
    bson_error_t *error)
{
    call->result = NGX_HTTP_BYTEMARK_FAILED;

    /* no server to talk to, or a broken stream: "connect" in the metrics */
    call->error_kind =
        (error->domain == MONGOC_ERROR_SERVER_SELECTION
         || error->domain == MONGOC_ERROR_STREAM
         || (error->domain == MONGOC_ERROR_CLIENT
             && error->code == MONGOC_ERROR_CLIENT_AUTHENTICATE))
        ? NGX_HTTP_BYTEMARK_ERR_CONNECT : NGX_HTTP_BYTEMARK_ERR_QUERY;

    ngx_http_bytemark_mongo_cause(call->error, sizeof(call->error), error);
}


/*
 * The driver's message, for the error log: a server's message may span
 * lines (FerretDB appends a documentation link on a line of its own), and
 * one log line must stay one line.
 */

void
ngx_http_bytemark_mongo_cause(char *buf, size_t size, bson_error_t *error)
{
    u_char  *p;

    snprintf(buf, size, "%s (domain %u, code %u)", error->message,
             error->domain, error->code);

    ngx_http_bytemark_mongo_scrub(buf, size);

    for (p = (u_char *) buf; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *p = ' ';
        }
    }
}


/* thread: delete the user's entry (purge, or a repair after a failed
 * cache write) */

void
ngx_http_bytemark_mongo_purge(ngx_http_bytemark_call_t *call)
{
    bson_t                      filter;

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);

    ngx_http_bytemark_mongo_delete(call, &filter);

    bson_destroy(&filter);
}


/* thread: delete every entry older than max_age */

void
ngx_http_bytemark_mongo_cleanup(ngx_http_bytemark_call_t *call)
{
    bson_t                            filter, cond;
    ngx_http_bytemark_call_delete_t  *del;

    del = ngx_http_bytemark_call_delete(call);

    bson_init(&filter);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "timestamp", &cond);
    BSON_APPEND_INT64(&cond, "$lt", ngx_http_bytemark_now_ms() - del->max_age);
    bson_append_document_end(&filter, &cond);

    ngx_http_bytemark_mongo_delete(call, &filter);

    bson_destroy(&filter);
}


static void
ngx_http_bytemark_mongo_delete(ngx_http_bytemark_call_t *call, bson_t *filter)
{
    bson_t                      reply;
    bson_iter_t                 it;
    bson_error_t                error;
    mongoc_client_t            *client;
    mongoc_collection_t        *coll;
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = call->bmcf->mongo;

    coll = ngx_http_bytemark_mongo_acquire(mongo, &client, call->timeout,
                                           &error);
    if (coll == NULL) {
        ngx_http_bytemark_mongo_error(call, &error);
        return;
    }

    if (mongoc_collection_delete_many(coll, filter, NULL, &reply, &error)) {
        call->result = NGX_HTTP_BYTEMARK_FOUND;

        if (bson_iter_init_find(&it, &reply, "deletedCount")) {
            ngx_http_bytemark_call_delete(call)->deleted =
                                                    bson_iter_as_int64(&it);
        }

    } else {
        ngx_http_bytemark_mongo_error(call, &error);
    }

    bson_destroy(&reply);
    ngx_http_bytemark_mongo_release(mongo, client, coll);
}
