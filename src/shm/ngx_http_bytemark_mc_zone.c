
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_microcache zone=<name>:<size> ttl=<time> | off
 *
 * The store of the micro-cache: whole 200 answers of the read handlers
 * (body, ETag, source) kept in a shared-memory zone for every worker, the
 * way nginx's own shared caches work: a slab pool, an rbtree by key, an LRU
 * queue; when the zone is full the least recently used answers are evicted.
 *
 * What is kept, for how long, and who may replace an entry is the policy's
 * (flow/ngx_http_bytemark_microcache.c): here are only the entries, found,
 * allocated, inserted and deleted with the zone locked by the caller, and
 * the walk that drops a user's entries.  The walk goes through the LRU
 * queue under the zone's lock: writes are rare next to reads, and it stays
 * in the microseconds for zones of this size.
 *
 * One answer may not flush the others: an answer larger than an eighth of
 * the zone's pages is refused before anything is evicted (as nginx's SSL
 * session cache refuses sessions over a fixed size), and one allocation
 * evicts at most a few entries, then gives up (as nginx's shared zones
 * evict a few and retry, never the whole zone): in a zone cut up in small
 * slots, room for a large answer may take evicting most of them.
 */


#include "ngx_http_bytemark_shm.h"


/* the parameters of bytemark_microcache, as written */
typedef struct {
    ngx_str_t                      zone;        /* <name>:<size> */
    ngx_msec_t                     ttl;
} ngx_http_bytemark_mc_args_t;


/* an entry takes at most this part of the zone's pages */
#define NGX_HTTP_BYTEMARK_MC_MAX_SHARE  8

/* the evictions one allocation may cause */
#define NGX_HTTP_BYTEMARK_MC_MAX_EVICT  16


static char *ngx_http_bytemark_mc_add_zone(ngx_conf_t *cf,
    ngx_http_bytemark_loc_conf_t *blcf, ngx_http_bytemark_mc_args_t *args);
static char *ngx_http_bytemark_mc_register(ngx_conf_t *cf,
    ngx_shm_zone_t *zone);
static ngx_int_t ngx_http_bytemark_mc_init(ngx_shm_zone_t *zone, void *data);
static void ngx_http_bytemark_mc_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static size_t ngx_http_bytemark_mc_max_size(ngx_http_bytemark_mc_t *mc);


char *
ngx_http_bytemark_set_microcache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_loc_conf_t *blcf = conf;

    ngx_str_t                      *value;
    ngx_http_bytemark_param_err_t   err;
    ngx_http_bytemark_mc_args_t     args;

    static ngx_http_bytemark_param_t  params[] = {
        { ngx_string("zone"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mc_args_t, zone), 0, 0 },
        { ngx_string("ttl"), NGX_HTTP_BYTEMARK_PARAM_MSEC,
          offsetof(ngx_http_bytemark_mc_args_t, ttl), 1, 0 },
        { ngx_null_string, 0, 0, 0, 0 }
    };

    if (blcf->microcache != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        blcf->microcache = NULL;
        return NGX_CONF_OK;
    }

    ngx_memzero(&args, sizeof(ngx_http_bytemark_mc_args_t));

    if (ngx_http_bytemark_parse_params(cf, 1, params, &args, &err) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_microcache\" has an invalid parameter "
                           "\"%V\" (expected zone=<name>:<size> ttl=<time> or "
                           "off)", &value[err.arg]);
        return NGX_CONF_ERROR;
    }

    if (args.zone.len == 0 || args.ttl == 0) {
        return "needs \"zone=<name>:<size>\" and \"ttl=<time>\", or \"off\"";
    }

    return ngx_http_bytemark_mc_add_zone(cf, blcf, &args);
}


/* zone=<name>:<size>: the location's zone, added or found by name */

static char *
ngx_http_bytemark_mc_add_zone(ngx_conf_t *cf,
    ngx_http_bytemark_loc_conf_t *blcf, ngx_http_bytemark_mc_args_t *args)
{
    u_char     *p;
    ssize_t     size;
    ngx_str_t   name, s;

    name.data = args->zone.data;
    p = ngx_strlchr(name.data, name.data + args->zone.len, ':');

    if (p == NULL) {
        goto invalid_zone;
    }

    name.len = p - name.data;
    s.data = p + 1;
    s.len = args->zone.data + args->zone.len - s.data;

    size = ngx_parse_size(&s);
    if (name.len == 0 || size == NGX_ERROR) {
        goto invalid_zone;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_microcache\" zone \"%V\" is "
                           "too small", &name);
        return NGX_CONF_ERROR;
    }

    /* the tag tells our zones from any other module's of the same name */
    blcf->microcache = ngx_shared_memory_add(cf, &name, size,
                                             ngx_http_bytemark_mc_init);
    if (blcf->microcache == NULL) {
        return NGX_CONF_ERROR;
    }

    blcf->microcache_ttl = args->ttl;

    if (blcf->microcache->init == NULL) {
        return ngx_http_bytemark_mc_register(cf, blcf->microcache);
    }

    return NGX_CONF_OK;

invalid_zone:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"bytemark_microcache\" has an invalid parameter "
                       "\"zone=%V\" (expected zone=<name>:<size> "
                       "ttl=<time> or off)", &args->zone);
    return NGX_CONF_ERROR;
}


/* a zone met for the first time: its context, and in the list of all */

static char *
ngx_http_bytemark_mc_register(ngx_conf_t *cf, ngx_shm_zone_t *zone)
{
    ngx_shm_zone_t                 **slot;
    ngx_http_bytemark_main_conf_t   *bmcf;

    /* the zone's context lives as long as this configuration */
    zone->data = ngx_pcalloc(cf->pool, sizeof(ngx_http_bytemark_mc_t));
    if (zone->data == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_http_bytemark_mc_init;

    /* every zone, for invalidation by ingest and purge */
    bmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_bytemark_module);

    if (bmcf->microcaches == NULL) {
        bmcf->microcaches = ngx_array_create(cf->pool, 2,
                                             sizeof(ngx_shm_zone_t *));
        if (bmcf->microcaches == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    slot = ngx_array_push(bmcf->microcaches);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = zone;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_bytemark_mc_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_http_bytemark_mc_t  *omc = data;

    size_t                   len;
    ngx_http_bytemark_mc_t  *mc;

    mc = zone->data;

    if (omc) {
        /* a reload keeps the answers */
        mc->sh = omc->sh;
        mc->shpool = omc->shpool;
        return NGX_OK;
    }

    mc->shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        mc->sh = mc->shpool->data;
        return NGX_OK;
    }

    mc->sh = ngx_slab_alloc(mc->shpool, sizeof(ngx_http_bytemark_mc_sh_t));
    if (mc->sh == NULL) {
        return NGX_ERROR;
    }

    mc->shpool->data = mc->sh;

    ngx_rbtree_init(&mc->sh->rbtree, &mc->sh->sentinel,
                    ngx_http_bytemark_mc_rbtree_insert_value);
    ngx_queue_init(&mc->sh->lru);

    len = sizeof(" in bytemark_microcache zone \"\"") + zone->shm.name.len;

    mc->shpool->log_ctx = ngx_slab_alloc(mc->shpool, len);
    if (mc->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(mc->shpool->log_ctx, " in bytemark_microcache zone \"%V\"%Z",
                &zone->shm.name);

    /* a full zone is normal: the LRU evicts, no need to log each time */
    mc->shpool->log_nomem = 0;

    return NGX_OK;
}


/* ordered by hash, then by the key itself, as ngx_http_limit_req does */

static void
ngx_http_bytemark_mc_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t            **p;
    ngx_http_bytemark_mc_node_t   *n, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            n = (ngx_http_bytemark_mc_node_t *) node;
            t = (ngx_http_bytemark_mc_node_t *) temp;

            p = (ngx_memn2cmp(n->data, t->data, n->key_len, t->key_len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


ngx_http_bytemark_mc_node_t *
ngx_http_bytemark_mc_find(ngx_http_bytemark_mc_t *mc, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                     rc;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_bytemark_mc_node_t  *n;

    node = mc->sh->rbtree.root;
    sentinel = mc->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        n = (ngx_http_bytemark_mc_node_t *) node;

        rc = ngx_memn2cmp(key->data, n->data, key->len, n->key_len);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * With the zone locked; evicts from the LRU tail until there is room, at
 * most NGX_HTTP_BYTEMARK_MC_MAX_EVICT entries; NULL for an entry too large.
 */

ngx_http_bytemark_mc_node_t *
ngx_http_bytemark_mc_alloc(ngx_http_bytemark_mc_t *mc, size_t size)
{
    ngx_uint_t                    evicted;
    ngx_queue_t                  *q;
    ngx_http_bytemark_mc_node_t  *n;

    if (size > ngx_http_bytemark_mc_max_size(mc)) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "bytemark: micro-cache entry of %uz bytes over the "
                       "zone's limit of %uz, not stored",
                       size, ngx_http_bytemark_mc_max_size(mc));
        return NULL;
    }

    evicted = 0;

    for ( ;; ) {
        n = ngx_slab_alloc_locked(mc->shpool, size);

        if (n
            || ngx_queue_empty(&mc->sh->lru)
            || evicted == NGX_HTTP_BYTEMARK_MC_MAX_EVICT)
        {
            break;
        }

        q = ngx_queue_last(&mc->sh->lru);
        ngx_http_bytemark_mc_delete(mc,
                        ngx_queue_data(q, ngx_http_bytemark_mc_node_t, queue));
        evicted++;
    }

    if (evicted) {
        ngx_http_bytemark_metrics_add(NGX_HTTP_BYTEMARK_M_MICROCACHE_EVICTION,
                                      evicted);
    }

    if (n == NULL) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "bytemark: micro-cache entry of %uz bytes found no "
                       "room after %ui evictions, not stored",
                       size, evicted);
    }

    return n;
}


/* the largest entry the zone takes: a share of the slab pool's pages */

static size_t
ngx_http_bytemark_mc_max_size(ngx_http_bytemark_mc_t *mc)
{
    return (size_t) (mc->shpool->end - mc->shpool->start)
           / NGX_HTTP_BYTEMARK_MC_MAX_SHARE;
}


/* with the zone locked: a new entry, the most recently used */

void
ngx_http_bytemark_mc_insert(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n)
{
    ngx_rbtree_insert(&mc->sh->rbtree, &n->node);
    ngx_queue_insert_head(&mc->sh->lru, &n->queue);
}


/* with the zone locked: an entry just used, the last to be evicted */

void
ngx_http_bytemark_mc_touch(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n)
{
    ngx_queue_remove(&n->queue);
    ngx_queue_insert_head(&mc->sh->lru, &n->queue);
}


void
ngx_http_bytemark_mc_delete(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n)
{
    ngx_queue_remove(&n->queue);
    ngx_rbtree_delete(&mc->sh->rbtree, &n->node);
    ngx_slab_free_locked(mc->shpool, n);
}


/*
 * Locks the zone.  Drops the user's answers and the placeholders of the
 * lookups in flight, which may have read before the write; returns how
 * many answers it dropped.
 */

ngx_uint_t
ngx_http_bytemark_mc_drop_user(ngx_http_bytemark_mc_t *mc, uint64_t user_id)
{
    ngx_uint_t                    dropped;
    ngx_queue_t                  *q, *next;
    ngx_http_bytemark_mc_node_t  *n;

    dropped = 0;

    ngx_shmtx_lock(&mc->shpool->mutex);

    for (q = ngx_queue_head(&mc->sh->lru);
         q != ngx_queue_sentinel(&mc->sh->lru);
         q = next)
    {
        next = ngx_queue_next(q);
        n = ngx_queue_data(q, ngx_http_bytemark_mc_node_t, queue);

        if (n->user_id == user_id) {
            dropped += (n->expires != 0);
            ngx_http_bytemark_mc_delete(mc, n);
        }
    }

    ngx_shmtx_unlock(&mc->shpool->mutex);

    return dropped;
}
