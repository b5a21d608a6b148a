
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The resolution order of the read handlers (SPEC 3.1, 3.2):
 *
 *   1. MongoDB findOne({user_id}) (carried with other lookups by one
 *      task: ngx_http_bytemark_mongo_batch.c): a fresh, complete entry
 *      answers;
 *   2. otherwise MySQL answers (and, for tickets, the cache is filled
 *      afterwards without delaying the response);
 *   3. MySQL failing too: a stale entry answers under bytemark_use_stale;
 *   4. otherwise 503.
 *
 * A user with a note (an ingest whose cache update failed after the commit)
 * skips the cache altogether, and the entry is deleted in the background;
 * its deletion clears the note.
 *
 * Step 1 is lookup_cache(), step 2 lookup_source(), and lookup_miss() goes
 * on from a cache that could not answer.  Every step that waits is a call
 * (call/); these functions return NGX_DONE while one is in flight, or the
 * rc of the response they sent.
 */


#include "ngx_http_bytemark_flow.h"


static ngx_int_t ngx_http_bytemark_lookup_cache(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
static void ngx_http_bytemark_lookup_cache_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);
static ngx_int_t ngx_http_bytemark_lookup_miss(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_result_e result);
static ngx_int_t ngx_http_bytemark_lookup_source(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
static void ngx_http_bytemark_lookup_source_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);
static ngx_int_t ngx_http_bytemark_serve_entry(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a,
    const char *source);
static ngx_int_t ngx_http_bytemark_serve_stale(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
static ngx_int_t ngx_http_bytemark_not_found(ngx_http_request_t *r);
static void ngx_http_bytemark_log_failure(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);
static ngx_int_t ngx_http_bytemark_is_fresh(ngx_http_request_t *r,
    ngx_http_bytemark_answer_t *a);


ngx_int_t
ngx_http_bytemark_lookup_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_http_bytemark_main_conf_t  *bmcf;

    bmcf = ngx_http_bytemark_get_backend(r);

    if (bmcf->mongo && bmcf->mysql
        && ngx_http_bytemark_note_get(bmcf, ctx->user_id, &ctx->note_stamp))
    {
        ctx->noted = 1;
    }

    if (bmcf->mongo && !ctx->noted) {
        rc = ngx_http_bytemark_lookup_cache(r, ctx);

    } else {
        rc = ngx_http_bytemark_lookup_source(r, ctx);
    }

    return (rc == NGX_DONE) ? ngx_http_bytemark_call_hold(r) : rc;
}


static ngx_int_t
ngx_http_bytemark_lookup_cache(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_loc_conf_t   *blcf;
    ngx_http_bytemark_main_conf_t  *bmcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    bmcf = ngx_http_bytemark_get_backend(r);

    if (ngx_http_bytemark_call_gate(bmcf, NGX_HTTP_BYTEMARK_BREAKER_MONGO,
                                    NGX_HTTP_BYTEMARK_GATE_LOOKUP)
        != NGX_OK)
    {
        /* stuck calls, or the breaker is open: the fallback answers at once */
        ctx->mongo_failed = 1;
        return ngx_http_bytemark_lookup_miss(r, ctx, NGX_HTTP_BYTEMARK_FAILED);
    }

    /* no run of its own: MongoDB's post() batches it in a task */
    call = ngx_http_bytemark_call_create(r, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_LOOKUP,
                                         "mongo find", NULL,
                                         ngx_http_bytemark_lookup_cache_done,
                                         blcf->mongo_timeout);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->user_id = ctx->user_id;
    call->report = NGX_HTTP_BYTEMARK_REPORT_ANSWER;

    if (ngx_http_bytemark_call_start(call, NGX_LOG_ERR) != NGX_OK) {
        ctx->mongo_failed = 1;
        return ngx_http_bytemark_lookup_miss(r, ctx,
                                             NGX_HTTP_BYTEMARK_NO_THREAD);
    }

    return NGX_DONE;
}


static void
ngx_http_bytemark_lookup_cache_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_int_t                   rc;
    ngx_http_bytemark_ctx_t    *ctx;
    ngx_http_bytemark_answer_t *a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
    a = &ngx_http_bytemark_call_lookup(call)->answer;

    ctx->mongo_used = 1;
    ctx->mongo_time += o->elapsed;

    switch (o->result) {

    case NGX_HTTP_BYTEMARK_FOUND:

        if (a->incomplete) {
            /* an ingest's placeholder: neither fresh nor stale */
            break;
        }

        if (!ngx_http_bytemark_is_fresh(r, a)) {
            /* keep it for step 3 */
            ctx->stale = *a;
            ctx->have_stale = 1;
            ngx_memzero(a, sizeof(ngx_http_bytemark_answer_t));
            break;
        }

        if (ctx->handler == NGX_HTTP_BYTEMARK_TICKETS
            || ngx_http_bytemark_find_pass(a, ctx->uuid, NULL))
        {
            rc = ngx_http_bytemark_serve_entry(r, ctx, a, "mongo");
            ngx_http_bytemark_lookup_finalize(r, rc);
            return;
        }

        /* a fresh entry without the pass: MySQL may know it */
        break;

    case NGX_HTTP_BYTEMARK_NOT_FOUND:
        break;

    case NGX_HTTP_BYTEMARK_MALFORMED:
        /* a fill after the MySQL answer repairs the entry */
        ngx_http_bytemark_log_failure(r, call, o);
        break;

    default:
        ngx_http_bytemark_log_failure(r, call, o);
        ctx->mongo_failed = 1;
        break;
    }

    rc = ngx_http_bytemark_lookup_miss(r, ctx, o->result);

    if (rc != NGX_DONE) {
        ngx_http_bytemark_lookup_finalize(r, rc);
    }
}


/*
 * The cache could not answer (a miss, a stale, incomplete or unreadable
 * entry, a failure): MySQL if there is one; without it the cache's own
 * answer is all there is (SPEC 3.1 "Either backend may be configured
 * alone").
 */

static ngx_int_t
ngx_http_bytemark_lookup_miss(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_result_e result)
{
    ngx_http_bytemark_main_conf_t  *bmcf;
    ngx_http_bytemark_loc_conf_t   *blcf;

    bmcf = ngx_http_bytemark_get_backend(r);

    if (bmcf->mysql) {
        return ngx_http_bytemark_lookup_source(r, ctx);
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (ctx->have_stale) {
        if (!blcf->use_stale) {
            return ngx_http_bytemark_unavailable(r);
        }

        if (ctx->handler == NGX_HTTP_BYTEMARK_PASS
            && ngx_http_bytemark_find_pass(&ctx->stale, ctx->uuid, NULL)
               == NULL)
        {
            return ngx_http_bytemark_not_found(r);
        }

        return ngx_http_bytemark_serve_stale(r, ctx);
    }

    switch (result) {

    case NGX_HTTP_BYTEMARK_FOUND:
        /* incomplete, or fresh without the asked-for pass */
        if (ctx->handler == NGX_HTTP_BYTEMARK_PASS) {
            return ngx_http_bytemark_not_found(r);
        }

        return ngx_http_bytemark_unavailable(r);

    case NGX_HTTP_BYTEMARK_NOT_FOUND:
        if (ctx->handler == NGX_HTTP_BYTEMARK_PASS) {
            return ngx_http_bytemark_not_found(r);
        }

        ngx_str_set(&ctx->source, "mongo");
        return ngx_http_bytemark_send_tickets(r, ctx, NULL,
                                              ngx_http_bytemark_now_ms());

    case NGX_HTTP_BYTEMARK_MALFORMED:
        return ngx_http_bytemark_send_error(r,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                   "the cached entry of this user cannot be read");

    default:
        return ngx_http_bytemark_unavailable(r);
    }
}


/*
 * MySQL: the servers in the order of bytemark_mysql_read (the primary
 * first, or a replica chosen by weight: ngx_http_bytemark_mysql_choose.c),
 * chosen here on the event loop so that each server gets a slice of the
 * budget (what is left, shared by the servers left) and a hung server
 * cannot spend all of it.  Servers whose breaker is open, or with too many
 * calls stuck in threads, are skipped.
 */

static ngx_int_t
ngx_http_bytemark_lookup_source(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_uint_t                        i, k, n, tickets;
    ngx_msec_t                        left;
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_loc_conf_t     *blcf;
    ngx_http_bytemark_main_conf_t    *bmcf;
    ngx_http_bytemark_call_lookup_t  *lookup;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    bmcf = ngx_http_bytemark_get_backend(r);

    if (ctx->mysql_deadline == 0) {
        ctx->mysql_deadline = ngx_current_msec + blcf->mysql_timeout;
        ctx->mysql_first = ngx_http_bytemark_mysql_read_first(bmcf,
                                                              ctx->user_id);
    }

    n = bmcf->mysql_servers->nelts;
    i = 0;

    for (k = ctx->mysql_server; k < n; k++) {
        i = ngx_http_bytemark_mysql_read_server(bmcf, ctx->mysql_first, k);

        if (ngx_http_bytemark_mysql_server_usable(bmcf, i,
                                                  NGX_HTTP_BYTEMARK_GATE_LOOKUP)
            == NGX_OK)
        {
            break;
        }
    }

    left = (ngx_msec_int_t) (ctx->mysql_deadline - ngx_current_msec) > 0
           ? ctx->mysql_deadline - ngx_current_msec : 0;

    if (k == n || left == 0) {
        return ngx_http_bytemark_serve_stale(r, ctx);
    }

    ctx->mysql_server = k;

    tickets = (ctx->handler == NGX_HTTP_BYTEMARK_TICKETS);

    call = ngx_http_bytemark_call_create(r, NGX_HTTP_BYTEMARK_BACKEND_MYSQL,
                                         NGX_HTTP_BYTEMARK_OP_LOOKUP,
                                         tickets ? "mysql tickets query"
                                                 : "mysql pass query",
                                         tickets
                                         ? ngx_http_bytemark_mysql_tickets
                                         : ngx_http_bytemark_mysql_pass,
                                         ngx_http_bytemark_lookup_source_done,
                                         left / (n - k));

    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->slot = NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i;
    /* the MySQL side reports what the server did; a spent slice is ours */
    call->report = NGX_HTTP_BYTEMARK_REPORT_TIMEOUT;
    call->user_id = ctx->user_id;

    lookup = ngx_http_bytemark_call_lookup(call);
    ngx_memcpy(lookup->uuid, ctx->uuid, NGX_HTTP_BYTEMARK_UUID_LEN);
    /* the fill that may follow writes the cache from the rows */
    lookup->answer.keep_rows = tickets
                               && ngx_http_bytemark_fill_wanted(r, ctx);

    if (ngx_http_bytemark_call_start(call, NGX_LOG_ERR) != NGX_OK) {
        return ngx_http_bytemark_serve_stale(r, ctx);
    }

    return NGX_DONE;
}


static void
ngx_http_bytemark_lookup_source_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_int_t                    rc;
    ngx_http_bytemark_ctx_t     *ctx;
    ngx_http_bytemark_answer_t  *a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
    a = &ngx_http_bytemark_call_lookup(call)->answer;

    ctx->mysql_used = 1;
    ctx->mysql_time += o->elapsed;

    if (ctx->noted) {
        ngx_http_bytemark_repair(r, ctx);
    }

    switch (o->result) {

    case NGX_HTTP_BYTEMARK_FOUND:
    case NGX_HTTP_BYTEMARK_NOT_FOUND:

        ctx->mysql_answered = *ngx_http_bytemark_mysql_server_name(call->bmcf,
                                     call->slot
                                     - NGX_HTTP_BYTEMARK_BREAKER_MYSQL);

        if (ctx->handler == NGX_HTTP_BYTEMARK_PASS) {
            if (o->result == NGX_HTTP_BYTEMARK_NOT_FOUND) {
                rc = ngx_http_bytemark_not_found(r);

            } else {
                ngx_str_set(&ctx->source, "mysql");
                rc = ngx_http_bytemark_send_pass(r, ctx, a);
            }

            break;
        }

        ngx_str_set(&ctx->source, "mysql");
        rc = ngx_http_bytemark_send_tickets(r, ctx, a->passes, a->timestamp);

        ngx_http_bytemark_fill(r, ctx, a);
        break;

    default:
        ngx_http_bytemark_log_failure(r, call, o);

        if (o->result == NGX_HTTP_BYTEMARK_TIMED_OUT
            || call->error_kind != NGX_HTTP_BYTEMARK_ERR_QUERY)
        {
            /* the server did not answer: the next one may */
            ctx->mysql_server++;
            rc = ngx_http_bytemark_lookup_source(r, ctx);

            if (rc == NGX_DONE) {
                return;
            }

            break;
        }

        /* the server answered with an error: a replica would too */
        rc = ngx_http_bytemark_serve_stale(r, ctx);
        break;
    }

    ngx_http_bytemark_lookup_finalize(r, rc);
}


static ngx_int_t
ngx_http_bytemark_serve_entry(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a,
    const char *source)
{
    ctx->source.data = (u_char *) source;
    ctx->source.len = ngx_strlen(source);

    if (ctx->handler == NGX_HTTP_BYTEMARK_TICKETS) {
        return ngx_http_bytemark_send_tickets(r, ctx, a->passes,
                                              a->timestamp);
    }

    return ngx_http_bytemark_send_pass(r, ctx, a);
}


/* MySQL failed (or could not be asked): step 3 or step 4 */

static ngx_int_t
ngx_http_bytemark_serve_stale(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    ngx_http_bytemark_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (!ctx->have_stale || !blcf->use_stale) {
        return ngx_http_bytemark_unavailable(r);
    }

    /* a stale entry without the pass proves nothing: the pass may exist */
    if (ctx->handler == NGX_HTTP_BYTEMARK_PASS
        && ngx_http_bytemark_find_pass(&ctx->stale, ctx->uuid, NULL) == NULL)
    {
        return ngx_http_bytemark_unavailable(r);
    }

    return ngx_http_bytemark_serve_entry(r, ctx, &ctx->stale, "stale");
}




static ngx_int_t
ngx_http_bytemark_is_fresh(ngx_http_request_t *r,
    ngx_http_bytemark_answer_t *a)
{
    int64_t                        now;
    ngx_http_bytemark_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (blcf->cache_ttl == 0) {
        return 1;
    }

    if (!a->has_timestamp) {
        return 0;
    }

    now = ngx_http_bytemark_now_ms();

    /*
     * The timestamp comes from a document anyone may have written: compare
     * without the signed overflow of now - INT64_MIN.
     */
    if (a->timestamp >= now) {
        return 1;
    }

    return (uint64_t) now - (uint64_t) a->timestamp
           <= (uint64_t) blcf->cache_ttl;
}


static ngx_int_t
ngx_http_bytemark_not_found(ngx_http_request_t *r)
{
    return ngx_http_bytemark_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        "no such pass for this user");
}


static void
ngx_http_bytemark_log_failure(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "bytemark: %s for user %uL failed after %M ms: %s",
                  call->name, call->user_id, o->elapsed,
                  o->error[0] ? o->error : "unknown error");
}
