
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The micro-cache's policy.  Whole 200 answers of the read handlers (body,
 * ETag, source) are kept for every worker in a shared zone, whose store is
 * shm/ngx_http_bytemark_mc_zone.c (the "bytemark_microcache" directive, the
 * rbtree, the LRU and its evictions); which answers are served, kept and
 * refreshed, and by whom, is decided here.
 *
 * The key is the backend, the handler, the user and the arguments that
 * shape the answer (status and version filters, or the pass uuid), so
 * unrelated query arguments cannot bust it.
 *
 * No stampede: the first request that misses marks the key as updating and
 * asks the backends; meanwhile others poll the zone every few milliseconds
 * until the answer is there (or the updating request gave up).  N concurrent
 * misses make one backend lookup.  Waiters in the worker that stores the
 * answer (or gives up) look again at once, not at their next poll: only
 * those of other workers pay for the poll's period.
 *
 * No wait for an expired answer either, as with nginx's
 * "proxy_cache_use_stale updating" and "proxy_cache_background_update": the
 * first request that finds it expired (for less than another ttl) is
 * answered with it at once (EXPIRED), like everyone else while it is
 * refreshed (UPDATING), and the refresh runs on its own, as a lookup of a
 * request that has no client (ngx_http_bytemark_mc_refresh()).  A
 * background subrequest would not do: it holds its client's connection,
 * whose next request would wait for the backends instead.  An answer
 * expired for longer, or any expired answer under "bytemark_use_stale off",
 * is never served: it is refreshed by the request that finds it, and the
 * others wait for that refresh, as for a miss.
 *
 * Each refresh (or fill) owns the key by a number, taken from the zone: a
 * lookup that lost its key (to an invalidation, or to another refresh once
 * its own budget was spent) stores nothing and releases nothing.
 *
 * Entries stored at the same moment, a hot set filled at start-up, would
 * all expire at the same moment again and again, and their refreshes come
 * in bursts: each ttl is shortened by up to a tenth, at random, so that
 * they drift apart.
 *
 * Ingest and purge drop a user's answers from every micro-cache zone; the
 * zones are shared, so that holds in every worker at once.  They drop the
 * lookups in flight too (their placeholders), and a lookup stores its
 * answer only if its placeholder is still there: an answer read from MySQL
 * before an ingest's commit is never kept after it.
 */


#include "ngx_http_bytemark_flow.h"


/* how an answer is taken from the zone: $bytemark_cache_status */
#define NGX_HTTP_BYTEMARK_MC_HIT       0
#define NGX_HTTP_BYTEMARK_MC_UPDATING  1     /* expired, another refreshes */
#define NGX_HTTP_BYTEMARK_MC_EXPIRED   2     /* expired, we refresh */


static ngx_uint_t ngx_http_bytemark_mc_servable(
    ngx_http_bytemark_loc_conf_t *blcf, ngx_http_bytemark_mc_node_t *n,
    int64_t now);
static ngx_int_t ngx_http_bytemark_mc_key(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
static ngx_int_t ngx_http_bytemark_mc_serve(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_mc_node_t *n,
    ngx_http_bytemark_mc_t *mc, ngx_uint_t how);
static ngx_int_t ngx_http_bytemark_mc_claim(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n, uint32_t hash, int64_t now);
static void ngx_http_bytemark_mc_release(ngx_shm_zone_t *zone, ngx_str_t *key,
    uint64_t gen);


/*
 * Before the backends: NGX_DECLINED to go on with the lookup (the key is
 * now ours to fill), NGX_DONE while waiting for another request's lookup,
 * or the rc of the answer sent from the cache.
 */

ngx_int_t
ngx_http_bytemark_microcache_lookup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx)
{
    int64_t                        now;
    uint32_t                       hash;
    uint64_t                       gen;
    ngx_int_t                      rc;
    ngx_http_bytemark_mc_t        *mc;
    ngx_http_bytemark_mc_node_t   *n;
    ngx_http_bytemark_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);

    if (blcf->microcache == NULL) {
        return NGX_DECLINED;
    }

    if (ctx->mc_key.len == 0 && ngx_http_bytemark_mc_key(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->mc_zone = blcf->microcache;

    mc = blcf->microcache->data;
    hash = ngx_crc32_short(ctx->mc_key.data, ctx->mc_key.len);
    now = ngx_http_bytemark_now_ms();

    ngx_shmtx_lock(&mc->shpool->mutex);

    n = ngx_http_bytemark_mc_find(mc, &ctx->mc_key, hash);

    if (n && n->expires > now) {
        return ngx_http_bytemark_mc_serve(r, ctx, n, mc,
                                          NGX_HTTP_BYTEMARK_MC_HIT);
    }

    if (n && n->updating > now) {
        /* another request is asking the backends for this key */

        if (ngx_http_bytemark_mc_servable(blcf, n, now)) {
            /* meanwhile the previous answer, expired a moment ago, will do */
            return ngx_http_bytemark_mc_serve(r, ctx, n, mc,
                                              NGX_HTTP_BYTEMARK_MC_UPDATING);
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "bytemark: micro-cache \"%V\" updating, waiting",
                       &ctx->mc_key);

        ngx_shmtx_unlock(&mc->shpool->mutex);
        return ngx_http_bytemark_microcache_wait(r, ctx);
    }

    /*
     * A refresh takes one of the worker's connections: clients come first,
     * and a worker short of them refreshes in the foreground as before.
     */
    if (ngx_http_bytemark_mc_servable(blcf, n, now)
        && ngx_cycle->free_connection_n > ngx_cycle->connection_n / 2)
    {
        /* expired a moment ago: it answers while a refresh runs */
        gen = ++mc->sh->gen;
        n->updating = now + (int64_t) ngx_http_bytemark_mc_budget(r);
        n->gen = gen;

        rc = ngx_http_bytemark_mc_serve(r, ctx, n, mc,
                                        NGX_HTTP_BYTEMARK_MC_EXPIRED);

        if (ngx_http_bytemark_mc_refresh(r, ctx, gen) != NGX_OK) {
            /* the next request tries again */
            ngx_http_bytemark_mc_release(ctx->mc_zone, &ctx->mc_key, gen);
        }

        return rc;
    }

    return ngx_http_bytemark_mc_claim(r, ctx, mc, n, hash, now);
}


/*
 * The key is this request's to look up: an entry not to be served is
 * marked updating, or a placeholder that says "updating" is inserted, so
 * that the others wait for us.  Called with the zone locked; unlocks it.
 */

static ngx_int_t
ngx_http_bytemark_mc_claim(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n, uint32_t hash, int64_t now)
{
    uint64_t  gen;

    gen = ++mc->sh->gen;

    if (n) {
        /*
         * Not to be served (long expired, or stale answers off), or no
         * connection to spare, or its lookup gave up: ours to refresh,
         * in the foreground; the others wait for us.
         */
        n->updating = now + (int64_t) ngx_http_bytemark_mc_budget(r);
        n->gen = gen;

        if (n->expires) {
            ngx_str_set(&ctx->cache_status, "EXPIRED");
            ngx_http_bytemark_metrics_inc(
                                   NGX_HTTP_BYTEMARK_M_MICROCACHE_EXPIRED);

        } else {
            /* a placeholder whose lookup gave up: still a miss */
            ngx_str_set(&ctx->cache_status, "MISS");
            ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_MICROCACHE_MISS);
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "bytemark: micro-cache \"%V\" refreshed by this "
                       "request, %V", &ctx->mc_key, &ctx->cache_status);

    } else {
        /* a placeholder that says "updating" to the others */
        n = ngx_http_bytemark_mc_alloc(mc,
                  offsetof(ngx_http_bytemark_mc_node_t, data)
                  + ctx->mc_key.len);

        if (n) {
            n->node.key = hash;
            n->user_id = ctx->user_id;
            n->expires = 0;
            n->updating = now + (int64_t) ngx_http_bytemark_mc_budget(r);
            n->gen = gen;
            n->key_len = (u_short) ctx->mc_key.len;
            n->etag_len = 0;
            n->source_len = 0;
            n->body_len = 0;
            ngx_memcpy(n->data, ctx->mc_key.data, ctx->mc_key.len);

            ngx_http_bytemark_mc_insert(mc, n);
        }

        ngx_str_set(&ctx->cache_status, "MISS");
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_MICROCACHE_MISS);
    }

    ctx->mc_updating = (n != NULL);
    ctx->mc_gen = gen;

    ngx_shmtx_unlock(&mc->shpool->mutex);

    return NGX_DECLINED;
}


/*
 * An expired answer may be served while it is refreshed if it expired less
 * than another ttl ago, and if the location serves stale answers at all.
 */

static ngx_uint_t
ngx_http_bytemark_mc_servable(ngx_http_bytemark_loc_conf_t *blcf,
    ngx_http_bytemark_mc_node_t *n, int64_t now)
{
    return n != NULL
           && n->expires != 0
           && blcf->use_stale
           && now - n->expires < (int64_t) blcf->microcache_ttl;
}


/* called with the zone locked; unlocks it */

static ngx_int_t
ngx_http_bytemark_mc_serve(ngx_http_request_t *r, ngx_http_bytemark_ctx_t *ctx,
    ngx_http_bytemark_mc_node_t *n, ngx_http_bytemark_mc_t *mc,
    ngx_uint_t how)
{
    u_char     *p;
    ngx_str_t   body, etag;

    p = ngx_pnalloc(r->pool, n->etag_len + n->source_len + n->body_len);
    if (p == NULL) {
        ngx_shmtx_unlock(&mc->shpool->mutex);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(p, n->data + n->key_len,
               n->etag_len + n->source_len + n->body_len);

    ngx_http_bytemark_mc_touch(mc, n);

    etag.data = p;
    etag.len = n->etag_len;
    ctx->source.data = p + n->etag_len;
    ctx->source.len = n->source_len;
    body.data = p + n->etag_len + n->source_len;
    body.len = n->body_len;

    ngx_shmtx_unlock(&mc->shpool->mutex);

    ctx->mc_served = 1;

    /*
     * "hit": answered from the zone with no lookup of its own, fresh or
     * while another request refreshes it; "expired": a refresh started.
     */
    switch (how) {

    case NGX_HTTP_BYTEMARK_MC_EXPIRED:
        ngx_str_set(&ctx->cache_status, "EXPIRED");
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_MICROCACHE_EXPIRED);
        break;

    case NGX_HTTP_BYTEMARK_MC_UPDATING:
        ngx_str_set(&ctx->cache_status, "UPDATING");
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_MICROCACHE_HIT);
        break;

    default: /* NGX_HTTP_BYTEMARK_MC_HIT */
        ngx_str_set(&ctx->cache_status, "HIT");
        ngx_http_bytemark_metrics_inc(NGX_HTTP_BYTEMARK_M_MICROCACHE_HIT);
    }

    return ngx_http_bytemark_send_cached(r, &body, &etag, &ctx->source);
}


/* after a 200 from the backends: keep it for the others */

void
ngx_http_bytemark_microcache_store(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_str_t *body, ngx_str_t *etag)
{
    int64_t                        now;
    uint32_t                       hash;
    ngx_msec_t                     ttl;
    ngx_http_bytemark_mc_t        *mc;
    ngx_http_bytemark_mc_node_t   *n;
    ngx_http_bytemark_loc_conf_t  *blcf;

    if (!ctx->mc_updating) {
        return;
    }

    if (ctx->source.len == 5
        && ngx_strncmp(ctx->source.data, "stale", 5) == 0)
    {
        /* a stale answer is not worth keeping: let the next one retry */
        ngx_http_bytemark_microcache_release(ctx);
        ngx_str_set(&ctx->cache_status, "BYPASS");
        return;
    }

    ctx->mc_updating = 0;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_bytemark_module);
    mc = ctx->mc_zone->data;
    hash = ngx_crc32_short(ctx->mc_key.data, ctx->mc_key.len);
    now = ngx_http_bytemark_now_ms();

    ngx_shmtx_lock(&mc->shpool->mutex);

    n = ngx_http_bytemark_mc_find(mc, &ctx->mc_key, hash);

    if (n == NULL || n->updating == 0 || n->gen != ctx->mc_gen) {
        /*
         * Invalidated by a write while we asked the backends (and perhaps
         * asked for again since), or taken over once our budget was spent.
         */
        ngx_shmtx_unlock(&mc->shpool->mutex);
        return;
    }

    /* the placeholder or the expired answer: replaced whole */
    ngx_http_bytemark_mc_delete(mc, n);

    n = ngx_http_bytemark_mc_alloc(mc, offsetof(ngx_http_bytemark_mc_node_t,
                                                data)
                                       + ctx->mc_key.len + etag->len
                                       + ctx->source.len + body->len);
    if (n == NULL) {
        /* too large for the zone, or no room: the waiters look for it */
        ngx_shmtx_unlock(&mc->shpool->mutex);
        ngx_http_bytemark_mc_wake(&ctx->mc_key);
        return;
    }

    n->node.key = hash;
    n->user_id = ctx->user_id;
    /* the spread that keeps entries stored together from expiring together */
    ttl = blcf->microcache_ttl;
    ttl -= (ttl >= 10) ? (ngx_msec_t) ngx_random() % (ttl / 10) : 0;

    n->expires = now + (int64_t) ttl;
    n->updating = 0;
    n->gen = 0;
    n->key_len = (u_short) ctx->mc_key.len;
    n->etag_len = (u_short) etag->len;
    n->source_len = (u_char) ctx->source.len;
    n->body_len = body->len;

    ngx_memcpy(ngx_cpymem(ngx_cpymem(ngx_cpymem(n->data, ctx->mc_key.data,
                                                ctx->mc_key.len),
                                     etag->data, etag->len),
                          ctx->source.data, ctx->source.len),
               body->data, body->len);

    ngx_http_bytemark_mc_insert(mc, n);

    ngx_shmtx_unlock(&mc->shpool->mutex);

    ngx_http_bytemark_mc_wake(&ctx->mc_key);
}


/*
 * The lookup ended without an answer to keep (an error, a stale answer, a
 * client gone): others must not wait for it.
 */

void
ngx_http_bytemark_microcache_release(ngx_http_bytemark_ctx_t *ctx)
{
    if (ctx->mc_wait && ctx->mc_wait->timer_set) {
        ngx_del_timer(ctx->mc_wait);
    }

    if (ctx->mc_wait && ctx->mc_wait->posted) {
        ngx_delete_posted_event(ctx->mc_wait);
    }

    ngx_http_bytemark_mc_unqueue(ctx);

    if (!ctx->mc_updating) {
        return;
    }

    ctx->mc_updating = 0;

    ngx_http_bytemark_mc_release(ctx->mc_zone, &ctx->mc_key, ctx->mc_gen);
}


/* the key's lookup numbered gen is over: if the key is still its own */

static void
ngx_http_bytemark_mc_release(ngx_shm_zone_t *zone, ngx_str_t *key,
    uint64_t gen)
{
    uint32_t                       hash;
    ngx_uint_t                     released;
    ngx_http_bytemark_mc_t        *mc;
    ngx_http_bytemark_mc_node_t   *n;

    mc = zone->data;
    hash = ngx_crc32_short(key->data, key->len);
    released = 0;

    ngx_shmtx_lock(&mc->shpool->mutex);

    n = ngx_http_bytemark_mc_find(mc, key, hash);

    if (n && n->updating && n->gen == gen) {
        released = 1;

        if (n->expires == 0) {
            ngx_http_bytemark_mc_delete(mc, n);

        } else {
            n->updating = 0;
            n->gen = 0;
        }
    }

    ngx_shmtx_unlock(&mc->shpool->mutex);

    if (released) {
        /* the first waiter takes over */
        ngx_http_bytemark_mc_wake(key);
    }
}


/* ingest, purge: the user's answers are gone from every zone */

void
ngx_http_bytemark_microcache_invalidate(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id)
{
    ngx_uint_t        i, dropped;
    ngx_shm_zone_t  **zones;

    if (bmcf->microcaches == NULL) {
        return;
    }

    zones = bmcf->microcaches->elts;

    for (i = 0; i < bmcf->microcaches->nelts; i++) {
        /* answers, and lookups in flight that read before the write */
        dropped = ngx_http_bytemark_mc_drop_user(zones[i]->data, user_id);

        if (dropped) {
            ngx_http_bytemark_metrics_add(
                NGX_HTTP_BYTEMARK_M_MICROCACHE_INVALIDATION, dropped);
        }
    }
}


/*
 * handler, user and the arguments that shape the answer; and the backend
 * but for the default one: two tenants' users of the same id are two users
 */

static ngx_int_t
ngx_http_bytemark_mc_key(ngx_http_request_t *r, ngx_http_bytemark_ctx_t *ctx)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   status, *backend;

    ngx_str_null(&status);
    backend = &ngx_http_bytemark_get_backend(r)->name;

    if (ctx->handler == NGX_HTTP_BYTEMARK_TICKETS) {
        (void) ngx_http_arg(r, (u_char *) "status", 6, &status);
    }

    len = 2 + NGX_INT64_LEN + 4 + NGX_HTTP_BYTEMARK_UUID_LEN + status.len
          + backend->len + 1;

    if (len > 0xffff) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->mc_key.data = p;

    if (backend->len) {
        p = ngx_sprintf(p, "%V/", backend);
    }

    if (ctx->handler == NGX_HTTP_BYTEMARK_TICKETS) {
        p = ngx_sprintf(p, "T%uL|%ui|%V", ctx->user_id, ctx->filter.versions,
                        &status);

    } else {
        p = ngx_sprintf(p, "P%uL|", ctx->user_id);
        p = ngx_cpymem(p, ctx->uuid, NGX_HTTP_BYTEMARK_UUID_LEN);
    }

    ctx->mc_key.len = p - ctx->mc_key.data;

    return NGX_OK;
}
