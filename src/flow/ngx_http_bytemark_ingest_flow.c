
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * An ingest (SPEC 3.3), once its body is parsed (http/ingest.c): the MySQL
 * transaction runs on the event loop and, once it committed, a second call
 * updates the cache on the MongoDB thread pool.  The second call is posted
 * from the first one's completion, not from the request: even when the
 * budget answers the client first, the cache update still follows the
 * commit.
 *
 * A 200 means the rows are committed.  If the cache update failed after the
 * commit, the user gets a note in shared memory: lookups skip the cache
 * entry until it has been deleted (see ngx_http_bytemark_lookup.c).  When
 * the notes' zone is full the write is committed but not protected, and is
 * answered 503 instead of 200: the client retries the idempotent write.
 */


#include "ngx_http_bytemark_flow.h"


static void ngx_http_bytemark_ingest_committed(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);
static ngx_http_bytemark_call_t *ngx_http_bytemark_ingest_update(
    ngx_http_request_t *r, ngx_http_bytemark_call_t *call, ngx_msec_t budget);
static void ngx_http_bytemark_ingest_cache(ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_ingest_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);
static ngx_uint_t ngx_http_bytemark_ingest_note(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, const char *cache_error);
static ngx_int_t ngx_http_bytemark_ingest_unavailable(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call);


/* the parsed passes (ctx->passes) go to the MySQL transaction */

ngx_int_t
ngx_http_bytemark_ingest_commit(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_loc_conf_t     *blcf;
    ngx_http_bytemark_call_ingest_t  *ingest;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    call = ngx_http_bytemark_call_create(r, NGX_HTTP_BYTEMARK_BACKEND_MYSQL,
                                         NGX_HTTP_BYTEMARK_OP_INGEST,
                                         "mysql ingest",
                                         ngx_http_bytemark_mysql_ingest,
                                         ngx_http_bytemark_ingest_committed,
                                         blcf->mysql_timeout);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the call owns the passes from now on: it may outlive the request */
    call->user_id = ctx->user_id;
    call->always_done = 1;
    ingest = ngx_http_bytemark_call_ingest(call);
    ingest->passes = ctx->passes;
    ingest->npasses = ctx->npasses;
    ctx->passes = NULL;
    ctx->npasses = 0;

    if (ngx_http_bytemark_call_start(call, NGX_LOG_ERR) != NGX_OK) {
        return ngx_http_bytemark_unavailable(r);
    }

    /* the body reader already holds the request for us */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


/*
 * Event loop: the MySQL transaction is over.  Once it committed, the cache
 * is updated on the thread pool (a second call),
 * and only then is the client answered; r is NULL when the request has
 * gone, and the cache is updated all the same.
 */

static void
ngx_http_bytemark_ingest_committed(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_int_t                         rc;
    ngx_msec_t                        budget;
    ngx_http_bytemark_ctx_t          *ctx;
    ngx_http_bytemark_call_t         *cache;
    ngx_http_bytemark_outcome_t       co;
    ngx_http_bytemark_loc_conf_t     *blcf;
    ngx_http_bytemark_main_conf_t    *bmcf;
    ngx_http_bytemark_call_ingest_t  *ingest, *update;

    bmcf = call->bmcf;

    if (o->result == NGX_HTTP_BYTEMARK_FOUND
        || ngx_http_bytemark_call_ingest(call)->commit_sent)
    {
        /* committed, or maybe: the user's reads go to the primary a while */
        ngx_http_bytemark_recent_set(bmcf, call->user_id);
    }

    if (r) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
        ctx->mysql_used = 1;
        ctx->mysql_time = o->elapsed;

        if (o->result == NGX_HTTP_BYTEMARK_FOUND
            || o->result == NGX_HTTP_BYTEMARK_CONFLICT
            || o->result == NGX_HTTP_BYTEMARK_REFUSED)
        {
            /* $bytemark_mysql_server: writes go to the primary */
            ctx->mysql_answered = *ngx_http_bytemark_mysql_server_name(bmcf,
                                                                      0);
        }
    }

    if (o->result != NGX_HTTP_BYTEMARK_FOUND || bmcf->mongo == NULL) {
        ngx_http_bytemark_ingest_done(r, call, o);
        return;
    }

    if (r) {
        /*
         * An ingest's budget is both backends' (SPEC 3.3 writes both before
         * it answers): the cache update gets what the transaction left.
         */
        blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

        budget = blcf->mysql_timeout + blcf->mongo_timeout;
        budget = (call->elapsed < blcf->mysql_timeout)
                 ? budget - call->elapsed : blcf->mongo_timeout;

    } else {
        /* nobody waits: the largest MongoDB budget of any location */
        budget = bmcf->mongo_budget;
    }

    cache = ngx_http_bytemark_ingest_update(r, call, budget);
    if (cache == NULL) {
        ingest = ngx_http_bytemark_call_ingest(call);
        ingest->cache_failed = 1;
        snprintf(ingest->cache_error, sizeof(ingest->cache_error),
                 "out of memory");
        ngx_http_bytemark_ingest_done(r, call, o);
        return;
    }

    update = ngx_http_bytemark_call_ingest(cache);

    rc = ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                     NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN);

    if (rc == NGX_BUSY) {
        update->cache_failed = 1;
        snprintf(update->cache_error, sizeof(update->cache_error),
                 "not tried: too many stuck MongoDB calls");

    } else if (rc == NGX_DECLINED) {
        update->cache_failed = 1;
        snprintf(update->cache_error, sizeof(update->cache_error),
                 "circuit breaker open for mongo");

    } else if (ngx_http_bytemark_call_post(cache) == NGX_OK) {
        return;

    } else {
        update->cache_failed = 1;
        snprintf(update->cache_error, sizeof(update->cache_error),
                 "thread pool queue is full");
    }

    co.result = NGX_HTTP_BYTEMARK_FOUND;
    co.elapsed = cache->elapsed;
    co.error = cache->error;

    ngx_http_bytemark_ingest_done(r, cache, &co);
    ngx_http_bytemark_call_free(cache);
}


/* the cache update's call: the committed passes move to it */

static ngx_http_bytemark_call_t *
ngx_http_bytemark_ingest_update(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_msec_t budget)
{
    ngx_http_bytemark_call_t         *cache;
    ngx_http_bytemark_call_ingest_t  *ingest, *update;

    cache = ngx_http_bytemark_call_create(r, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                          NGX_HTTP_BYTEMARK_OP_INGEST,
                                          "mongo ingest cache update",
                                          ngx_http_bytemark_ingest_cache,
                                          ngx_http_bytemark_ingest_done,
                                          budget);
    if (cache == NULL) {
        return NULL;
    }

    ingest = ngx_http_bytemark_call_ingest(call);
    update = ngx_http_bytemark_call_ingest(cache);

    cache->user_id = call->user_id;
    cache->result = NGX_HTTP_BYTEMARK_FOUND;
    cache->elapsed = call->elapsed;
    cache->always_done = 1;

    update->passes = ingest->passes;
    update->npasses = ingest->npasses;
    update->timestamp = ingest->timestamp;
    update->written = ingest->written;
    ingest->passes = NULL;
    ingest->npasses = 0;

    return cache;
}


/* thread: the cache update of a committed ingest */

static void
ngx_http_bytemark_ingest_cache(ngx_http_bytemark_call_t *call)
{
    int64_t                           start;
    ngx_http_bytemark_call_ingest_t  *ingest;

    ingest = ngx_http_bytemark_call_ingest(call);
    start = ngx_http_bytemark_now_ms();

    ngx_http_bytemark_mongo_ingest(call);

    ngx_http_bytemark_breaker_result(call->bmcf,
                                     NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                     !ingest->cache_failed,
                                     ngx_http_bytemark_now_ms() - start);

    /* whatever the cache did, the ingest itself committed */
    call->result = NGX_HTTP_BYTEMARK_FOUND;
}


/* r is NULL when the request has gone (budget, client); the note is not */

static void
ngx_http_bytemark_ingest_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_int_t                         rc;
    ngx_uint_t                        unprotected, cache_failed;
    const char                       *cache_error;
    ngx_http_bytemark_ctx_t          *ctx;
    ngx_http_bytemark_result_e        result;
    ngx_http_bytemark_call_ingest_t  *ingest;

    ingest = ngx_http_bytemark_call_ingest(call);
    unprotected = 0;
    result = o->result;
    cache_failed = 0;
    cache_error = "";

    if (result == NGX_HTTP_BYTEMARK_TIMED_OUT
        && call->run == ngx_http_bytemark_ingest_cache)
    {
        /* committed; the cache update outlived its budget (it goes on) */
        result = NGX_HTTP_BYTEMARK_FOUND;
        cache_failed = 1;
        cache_error = o->error;

    } else if (result == NGX_HTTP_BYTEMARK_FOUND) {
        cache_failed = ingest->cache_failed;
        cache_error = ingest->cache_error;
    }

    if (result == NGX_HTTP_BYTEMARK_FOUND) {
        /* committed: no micro-cached answer may show the state before */
        ngx_http_bytemark_microcache_invalidate(call->bmcf, call->user_id);

        if (cache_failed) {
            unprotected = ngx_http_bytemark_ingest_note(r, call, cache_error);
        }
    }

    if (r == NULL) {
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    switch (result) {

    case NGX_HTTP_BYTEMARK_FOUND:
        if (unprotected) {
            /* SPEC 3.3: never a 200 that a later lookup could contradict */
            rc = ngx_http_bytemark_send_error(r,
                     NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                     "the passes were stored, but the cache could not be "
                     "updated nor kept from serving their previous state; "
                     "retry the request (it is idempotent)");
            break;
        }

        rc = ngx_http_bytemark_send_written(r, ctx,
                                            (ngx_uint_t) ingest->written);
        break;

    case NGX_HTTP_BYTEMARK_CONFLICT:
        rc = ngx_http_bytemark_send_error(r, NGX_HTTP_CONFLICT, "conflict",
                 "a pass of this request belongs to another user; "
                 "nothing was written");
        break;

    case NGX_HTTP_BYTEMARK_REFUSED:
        /* the client's data, not a backend failure: logged at info */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "bytemark: mysql refused the ingest for user %uL: %s",
                      call->user_id, o->error);
        rc = ngx_http_bytemark_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_body", ingest->refused);
        break;

    default:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "bytemark: mysql ingest for user %uL failed after %M ms: "
                      "%s",
                      call->user_id, o->elapsed,
                      o->error[0] ? o->error : "unknown error");
        rc = ngx_http_bytemark_ingest_unavailable(r, call);
        break;
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The cache update of a committed ingest failed: lookups skip the user's
 * entry until it is deleted.  1: that could not be recorded.
 */

static ngx_uint_t
ngx_http_bytemark_ingest_note(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, const char *cache_error)
{
    ngx_log_t                        *log;
    ngx_http_bytemark_call_ingest_t  *ingest;

    log = r ? r->connection->log : ngx_cycle->log;
    ingest = ngx_http_bytemark_call_ingest(call);

    ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_WRITE_FAILURES_INGEST);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "bytemark: mongo cache update after the ingest for "
                  "user %uL failed: %s; lookups skip its cache entry "
                  "until it is deleted", call->user_id, cache_error);

    if (ngx_http_bytemark_note_set(call->bmcf, call->user_id,
                                   ingest->timestamp)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_CRIT, log, 0,
                      "bytemark: no room in \"bytemark_notes_zone\" "
                      "for a note on user %uL: its cache entry may be "
                      "stale, the ingest is answered 503",
                      call->user_id);
        return 1;
    }

    return 0;
}


/*
 * A failed ingest: before its COMMIT was sent nothing was written (a
 * transaction whose budget ran out is rolled back, never committed late);
 * once it was sent, the outcome is unknown, and the upsert is idempotent.
 */

static ngx_int_t
ngx_http_bytemark_ingest_unavailable(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call)
{
    if (!ngx_http_bytemark_call_ingest(call)->commit_sent) {
        return ngx_http_bytemark_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   "unavailable",
                   "the pass service is temporarily unavailable; nothing "
                   "was written, retry later");
    }

    return ngx_http_bytemark_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
               "unavailable",
               "the pass service did not confirm the commit in time: the "
               "outcome is unknown; the write is idempotent, retry it");
}
