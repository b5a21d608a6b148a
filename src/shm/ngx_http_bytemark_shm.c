
/*
 * State shared by all workers, in one shared-memory zone that outlives
 * reloads (same name, size and tag):
 *
 *   - per-user notes: "the cache entry of this user may be older than what
 *     an ingest acknowledged" (SPEC 3.3: MongoDB failed after the MySQL
 *     commit).  Lookups of a noted user skip the cache until the entry has
 *     been deleted;
 *   - the cleanup lock and the time of the last cleanup, so that exactly
 *     one worker runs it, across reloads too;
 *   - the circuit breakers (ngx_http_bytemark_breaker.c).
 *
 * Notes are rare, so a lookup first reads an atomic count and takes the
 * zone's mutex only when some note exists.
 */


#include "ngx_http_bytemark_shm.h"


#define NGX_HTTP_BYTEMARK_SHM_SIZE  (1024 * 1024)


struct ngx_http_bytemark_shm_s {
    ngx_rbtree_t                  rbtree;
    ngx_rbtree_node_t             sentinel;
    ngx_atomic_t                  notes;
    ngx_atomic_t                  cleanup_pid;      /* 0: nobody runs it */
    ngx_atomic_t                  cleanup_last;     /* ms */
    ngx_http_bytemark_breaker_t   breakers[NGX_HTTP_BYTEMARK_BREAKERS];
};


typedef struct {
    ngx_rbtree_node_t             node;             /* key: the user id */
    int64_t                       stamp;
} ngx_http_bytemark_note_t;


static ngx_int_t ngx_http_bytemark_shm_init(ngx_shm_zone_t *zone, void *data);
static ngx_http_bytemark_note_t *ngx_http_bytemark_note_find(
    ngx_http_bytemark_shm_t *shm, uint64_t user_id);


ngx_int_t
ngx_http_bytemark_shm_add(ngx_conf_t *cf, ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_str_t  name = ngx_string("bytemark_state");

    bmcf->shm_zone = ngx_shared_memory_add(cf, &name,
                                           NGX_HTTP_BYTEMARK_SHM_SIZE,
                                           &ngx_http_bytemark_module);
    if (bmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    bmcf->shm_zone->init = ngx_http_bytemark_shm_init;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_shm_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t          *shpool;
    ngx_http_bytemark_shm_t  *shm;

    if (data) {
        /* a reload: keep the notes and the cleanup state */
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    shm = ngx_slab_calloc(shpool, sizeof(ngx_http_bytemark_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&shm->rbtree, &shm->sentinel, ngx_rbtree_insert_value);

    shpool->data = shm;
    zone->data = shm;

    shpool->log_nomem = 0;

    return NGX_OK;
}


/* the note keeps the newest stamp; NGX_ERROR when the zone is full */

ngx_int_t
ngx_http_bytemark_note_set(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t stamp)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_bytemark_shm_t   *shm;
    ngx_http_bytemark_note_t  *note;

    shpool = (ngx_slab_pool_t *) bmcf->shm_zone->shm.addr;
    shm = bmcf->shm_zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    note = ngx_http_bytemark_note_find(shm, user_id);

    if (note == NULL) {
        note = ngx_slab_alloc_locked(shpool, sizeof(ngx_http_bytemark_note_t));
        if (note == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);
            return NGX_ERROR;
        }

        note->node.key = (ngx_rbtree_key_t) user_id;
        note->stamp = stamp;
        ngx_rbtree_insert(&shm->rbtree, &note->node);
        (void) ngx_atomic_fetch_add(&shm->notes, 1);

    } else if (stamp > note->stamp) {
        note->stamp = stamp;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


ngx_int_t
ngx_http_bytemark_note_get(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t *stamp)
{
    ngx_int_t                  found;
    ngx_slab_pool_t           *shpool;
    ngx_http_bytemark_shm_t   *shm;
    ngx_http_bytemark_note_t  *note;

    if (bmcf->shm_zone == NULL) {
        return 0;
    }

    shm = bmcf->shm_zone->data;

    if (shm->notes == 0) {
        return 0;
    }

    shpool = (ngx_slab_pool_t *) bmcf->shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    note = ngx_http_bytemark_note_find(shm, user_id);
    found = (note != NULL);

    if (note) {
        *stamp = note->stamp;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return found;
}


/* removes the note unless a newer failure set it again meanwhile */

void
ngx_http_bytemark_note_clear(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t upto)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_bytemark_shm_t   *shm;
    ngx_http_bytemark_note_t  *note;

    if (bmcf->shm_zone == NULL) {
        return;
    }

    shm = bmcf->shm_zone->data;

    if (shm->notes == 0) {
        return;
    }

    shpool = (ngx_slab_pool_t *) bmcf->shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    note = ngx_http_bytemark_note_find(shm, user_id);

    if (note && note->stamp <= upto) {
        ngx_rbtree_delete(&shm->rbtree, &note->node);
        ngx_slab_free_locked(shpool, note);
        (void) ngx_atomic_fetch_add(&shm->notes, -1);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


static ngx_http_bytemark_note_t *
ngx_http_bytemark_note_find(ngx_http_bytemark_shm_t *shm, uint64_t user_id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = (ngx_rbtree_key_t) user_id;
    node = shm->rbtree.root;
    sentinel = shm->rbtree.sentinel;

    while (node != sentinel) {
        if (key == node->key) {
            return (ngx_http_bytemark_note_t *) node;
        }

        node = (key < node->key) ? node->left : node->right;
    }

    return NULL;
}


ngx_http_bytemark_breaker_t *
ngx_http_bytemark_shm_breakers(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_http_bytemark_shm_t  *shm;

    shm = bmcf->shm_zone->data;

    return shm->breakers;
}


/*
 * The cleanup runs when nobody else runs it and the last run started at
 * least an interval ago.  A holder that died (a crashed worker) is replaced,
 * and so is one whose run has lasted longer than "lease": a run stuck in
 * the driver must not stop every later one.  The run is known by the time
 * it started (*stamp), so that a stuck run that ends after it was replaced
 * does not release its successor's lock.
 */

ngx_int_t
ngx_http_bytemark_cleanup_lock(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_msec_t interval, ngx_msec_t lease, int64_t *stamp)
{
    int64_t                   now, last;
    ngx_atomic_uint_t         holder;
    ngx_http_bytemark_shm_t  *shm;

    shm = bmcf->shm_zone->data;
    now = ngx_http_bytemark_now_ms();
    last = (int64_t) shm->cleanup_last;

    if (now - last < (int64_t) interval) {
        return NGX_DECLINED;
    }

    holder = shm->cleanup_pid;

    if (holder != 0 && kill((ngx_pid_t) holder, 0) == 0
        && now - last < (int64_t) lease)
    {
        return NGX_DECLINED;
    }

    if (!ngx_atomic_cmp_set(&shm->cleanup_pid, holder,
                            (ngx_atomic_uint_t) ngx_pid))
    {
        return NGX_DECLINED;
    }

    if (holder != 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: cache cleanup lock taken over from process "
                      "%P, whose run started %L ms ago",
                      (ngx_pid_t) holder, now - last);
    }

    shm->cleanup_last = (ngx_atomic_uint_t) now;
    *stamp = now;

    return NGX_OK;
}


/* the run that started at "stamp" is over, unless it was replaced */

void
ngx_http_bytemark_cleanup_unlock(ngx_http_bytemark_main_conf_t *bmcf,
    int64_t stamp)
{
    ngx_http_bytemark_shm_t  *shm;

    shm = bmcf->shm_zone->data;

    if ((int64_t) shm->cleanup_last != stamp) {
        return;
    }

    (void) ngx_atomic_cmp_set(&shm->cleanup_pid, (ngx_atomic_uint_t) ngx_pid,
                              0);
}
