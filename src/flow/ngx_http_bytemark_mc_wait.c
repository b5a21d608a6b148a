
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Requests waiting for another request's lookup of the same key: queued in
 * this worker and woken when the answer is stored or released; requests of
 * other workers find it at their next poll.
 */


#include "ngx_http_bytemark_flow.h"


/* how often a request waiting for another's lookup looks again */
#define NGX_HTTP_BYTEMARK_MC_POLL_MS  5


static void ngx_http_bytemark_mc_poll(ngx_event_t *ev);


static ngx_queue_t  ngx_http_bytemark_mc_waiters;


/* after a store or a release: this worker's waiters for key look again */

void
ngx_http_bytemark_mc_wake(ngx_str_t *key)
{
    ngx_queue_t              *q;
    ngx_event_t              *ev;
    ngx_http_bytemark_ctx_t  *ctx;

    if (ngx_http_bytemark_mc_waiters.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_http_bytemark_mc_waiters);
         q != ngx_queue_sentinel(&ngx_http_bytemark_mc_waiters);
         q = ngx_queue_next(q))
    {
        ctx = ngx_queue_data(q, ngx_http_bytemark_ctx_t, mc_queue);
        ev = ctx->mc_wait;

        if (ev->posted
            || ngx_memn2cmp(ctx->mc_key.data, key->data, ctx->mc_key.len,
                            key->len)
               != 0)
        {
            continue;
        }

        if (ev->timer_set) {
            ngx_del_timer(ev);
        }

        ngx_post_event(ev, &ngx_posted_events);
    }
}


void
ngx_http_bytemark_mc_unqueue(ngx_http_bytemark_ctx_t *ctx)
{
    if (ctx->mc_queued) {
        ngx_queue_remove(&ctx->mc_queue);
        ctx->mc_queued = 0;
    }
}


/* waiting for another request's lookup: poll the zone, within the budget */

ngx_int_t
ngx_http_bytemark_microcache_wait(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    if (ctx->mc_wait == NULL) {
        ctx->mc_wait = ngx_pcalloc(r->pool, sizeof(ngx_event_t));
        if (ctx->mc_wait == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->mc_wait->handler = ngx_http_bytemark_mc_poll;
        ctx->mc_wait->data = r;
        ctx->mc_wait->log = r->connection->log;

        /* held by the wait until the poll hands over or answers */
        ngx_http_bytemark_call_hold(r);

        if (ngx_http_bytemark_mc_waiters.next == NULL) {
            ngx_queue_init(&ngx_http_bytemark_mc_waiters);
        }

        ngx_queue_insert_tail(&ngx_http_bytemark_mc_waiters, &ctx->mc_queue);
        ctx->mc_queued = 1;
    }

    ngx_add_timer(ctx->mc_wait, NGX_HTTP_BYTEMARK_MC_POLL_MS);

    return NGX_DONE;
}


static void
ngx_http_bytemark_mc_poll(ngx_event_t *ev)
{
    ngx_int_t                 rc;
    ngx_connection_t         *c;
    ngx_http_request_t       *r;
    ngx_http_bytemark_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);

    ctx->mc_waited += NGX_HTTP_BYTEMARK_MC_POLL_MS;

    if (ctx->mc_waited < ngx_http_bytemark_mc_budget(r)) {
        rc = ngx_http_bytemark_microcache_lookup(r, ctx);

        if (rc == NGX_DONE) {
            return;
        }

    } else {
        /* the other lookup takes too long: ask the backends ourselves */
        ngx_str_set(&ctx->cache_status, "MISS");
        rc = NGX_DECLINED;
    }

    ngx_http_bytemark_mc_unqueue(ctx);

    if (rc == NGX_DECLINED) {
        rc = ngx_http_bytemark_lookup_start(r, ctx);
    }

    /* drops the wait's hold; a lookup in flight holds its own */
    ngx_http_finalize_request(r, rc);

    ngx_http_run_posted_requests(c);
}


ngx_msec_t
ngx_http_bytemark_mc_budget(ngx_http_request_t *r)
{
    ngx_http_bytemark_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    return blcf->mongo_timeout + blcf->mysql_timeout;
}
