
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The micro-cache's background refresh (issue 16): an expired answer is
 * served at once, and this request without a client asks the backends.
 */


#include "ngx_http_bytemark_flow.h"


static ngx_http_bytemark_ctx_t *ngx_http_bytemark_mc_ctx_copy(
    ngx_pool_t *pool, ngx_http_bytemark_ctx_t *ctx);
static ngx_http_request_t *ngx_http_bytemark_fake_request(
    ngx_http_request_t *r, ngx_pool_t *pool, ngx_log_t *log);
static void ngx_http_bytemark_mc_refresh_end(ngx_http_request_t *fr);
static u_char *ngx_http_bytemark_mc_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


/*
 * The refresh of an expired answer, on its own: a request without a client,
 * on a connection without a socket (as ngx_lua's timers do), that runs the
 * usual lookup.  Its answer is stored and never sent (see
 * ngx_http_bytemark_answer.c); it ends in ngx_http_bytemark_lookup_finalize()
 * instead of nginx's finalization, which would log it and close a socket.
 * Budgets, backend failures and stale answers are the lookup's, and any end
 * without an answer releases the key (the request's cleanup) for the next
 * request to retry.
 */

ngx_int_t
ngx_http_bytemark_mc_refresh(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, uint64_t gen)
{
    ngx_int_t                  rc;
    ngx_log_t                 *log;
    ngx_pool_t                *pool;
    ngx_http_request_t        *fr;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_bytemark_ctx_t   *fctx;

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    fctx = ngx_http_bytemark_mc_ctx_copy(pool, ctx);
    log = ngx_palloc(pool, sizeof(ngx_log_t));

    if (fctx == NULL || log == NULL) {
        goto failed;
    }

    fctx->mc_zone = ctx->mc_zone;
    fctx->mc_gen = gen;
    fctx->mc_updating = 1;
    fctx->mc_refresh = 1;

    /* the location's error log, and what the refresh is about */
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    *log = *clcf->error_log;
    log->connection = 0;
    log->action = NULL;
    log->handler = ngx_http_bytemark_mc_log_error;
    log->data = fctx;

    fr = ngx_http_bytemark_fake_request(r, pool, log);
    if (fr == NULL) {
        goto failed;
    }

    ngx_http_set_ctx(fr, fctx, ngx_http_bytemark_module);

    if (ngx_http_bytemark_request_cleanup(fr, fctx) != NGX_OK) {
        fctx->mc_updating = 0;
        ngx_http_bytemark_mc_refresh_end(fr);
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                   "bytemark: micro-cache refresh of \"%V\" started",
                   &fctx->mc_key);

    rc = ngx_http_bytemark_lookup_start(fr, fctx);

    if (rc != NGX_DONE) {
        /* answered at once (a breaker open, say): stored or released */
        ngx_http_bytemark_lookup_finalize(fr, rc);
    }

    return NGX_OK;

failed:

    ngx_destroy_pool(pool);
    return NGX_ERROR;
}


/* what the lookup reads of the client's context, copied: it may go first */

static ngx_http_bytemark_ctx_t *
ngx_http_bytemark_mc_ctx_copy(ngx_pool_t *pool, ngx_http_bytemark_ctx_t *ctx)
{
    ngx_str_t                *st, *fst;
    ngx_uint_t                i;
    ngx_http_bytemark_ctx_t  *fctx;

    fctx = ngx_pcalloc(pool, sizeof(ngx_http_bytemark_ctx_t));
    if (fctx == NULL) {
        return NULL;
    }

    fctx->handler = ctx->handler;
    fctx->user_id = ctx->user_id;
    ngx_memcpy(fctx->uuid, ctx->uuid, NGX_HTTP_BYTEMARK_UUID_LEN);
    fctx->filter.versions = ctx->filter.versions;

    fctx->user_id_text.len = ctx->user_id_text.len;
    fctx->user_id_text.data = ngx_pstrdup(pool, &ctx->user_id_text);
    fctx->mc_key.len = ctx->mc_key.len;
    fctx->mc_key.data = ngx_pstrdup(pool, &ctx->mc_key);

    if (fctx->user_id_text.data == NULL || fctx->mc_key.data == NULL) {
        return NULL;
    }

    if (ctx->filter.statuses == NULL) {
        return fctx;
    }

    fctx->filter.statuses = ngx_array_create(pool,
                                             ctx->filter.statuses->nelts,
                                             sizeof(ngx_str_t));
    if (fctx->filter.statuses == NULL) {
        return NULL;
    }

    st = ctx->filter.statuses->elts;

    for (i = 0; i < ctx->filter.statuses->nelts; i++) {
        fst = ngx_array_push(fctx->filter.statuses);
        if (fst == NULL) {
            return NULL;
        }

        fst->len = st[i].len;
        fst->data = ngx_pstrdup(pool, &st[i]);
        if (fst->data == NULL) {
            return NULL;
        }
    }

    return fctx;
}


/*
 * A request without a client, in r's location, on a connection without a
 * socket (as ngx_lua's timers make theirs); all of it in pool, which the
 * caller destroys if this fails (NULL).
 */

static ngx_http_request_t *
ngx_http_bytemark_fake_request(ngx_http_request_t *r, ngx_pool_t *pool,
    ngx_log_t *log)
{
    ngx_connection_t    *c, *saved;
    ngx_http_request_t  *fr;

    fr = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    if (fr == NULL) {
        return NULL;
    }

    fr->ctx = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    if (fr->ctx == NULL) {
        return NULL;
    }

    /* an error answer adds its headers (Retry-After) before it is dropped */
    if (ngx_list_init(&fr->headers_out.headers, pool, 4,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_list_init(&fr->headers_in.headers, pool, 1,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        return NULL;
    }

    /* with select or poll, ngx_get_connection() files the slot under fd 0 */
    saved = ngx_cycle->files ? ngx_cycle->files[0] : NULL;

    c = ngx_get_connection(0, log);

    if (ngx_cycle->files) {
        ngx_cycle->files[0] = saved;
    }

    if (c == NULL) {
        return NULL;
    }

    c->fd = (ngx_socket_t) -1;
    c->pool = pool;
    c->log = log;
    c->read->log = log;
    c->write->log = log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->data = fr;

    fr->signature = NGX_HTTP_MODULE;
    fr->connection = c;
    fr->pool = pool;
    fr->main = fr;
    fr->count = 1;
    fr->method = NGX_HTTP_GET;
    fr->main_conf = r->main_conf;
    fr->srv_conf = r->srv_conf;
    fr->loc_conf = r->loc_conf;
    fr->start_sec = ngx_time();
    fr->start_msec = ngx_current_msec;
    fr->read_event_handler = ngx_http_block_reading;
    fr->write_event_handler = ngx_http_request_empty_handler;

    return fr;
}


/*
 * Where the lookup's stages end a request: nginx's finalization for a
 * client's, the end of a refresh for ours.
 */

void
ngx_http_bytemark_lookup_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_bytemark_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    if (ctx == NULL || !ctx->mc_refresh) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "bytemark: micro-cache refresh of \"%V\" done: %i",
                   &ctx->mc_key, rc);

    ngx_http_bytemark_mc_refresh_end(r);
}


static void
ngx_http_bytemark_mc_refresh_end(ngx_http_request_t *fr)
{
    ngx_pool_t          *pool;
    ngx_connection_t    *c;
    ngx_http_cleanup_t  *cln;

    /*
     * As ngx_http_free_request() does: a call in flight is abandoned, and
     * the key released if nothing was stored.
     */
    for (cln = fr->cleanup; cln; cln = cln->next) {
        if (cln->handler) {
            cln->handler(cln->data);
        }
    }

    c = fr->connection;
    pool = fr->pool;

    /* ngx_http_run_posted_requests() after a call's done() looks at it */
    c->destroyed = 1;

    /* ngx_free_connection() indexes ngx_cycle->files by fd */
    c->fd = 0;
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    ngx_destroy_pool(pool);
}


static u_char *
ngx_http_bytemark_mc_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_http_bytemark_ctx_t  *ctx = log->data;

    return ngx_snprintf(buf, len, ", micro-cache refresh of \"%V\"",
                        &ctx->mc_key);
}
