
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

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
 * zone's mutex only when some note exists.  The zone's size is
 * "bytemark_notes_zone size=" (1m: some 16000 notes); a note that finds no
 * room makes the ingest answer 503 (ngx_http_bytemark_ingest_flow.c).  Each
 * worker walks the notes in the background and deletes their entries
 * (ngx_http_bytemark_notes.c); a note taken for that is leased, so that
 * the workers do not all delete the same entries.
 */


#include "ngx_http_bytemark_shm.h"


#define NGX_HTTP_BYTEMARK_SHM_SIZE  (1024 * 1024)

/* as nginx's own zones: a slab pool needs a few pages */
#define NGX_HTTP_BYTEMARK_SHM_MIN   (8 * ngx_pagesize)


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
    int64_t                       leased;           /* ms; being deleted */
} ngx_http_bytemark_note_t;


static ngx_int_t ngx_http_bytemark_shm_init(ngx_shm_zone_t *zone, void *data);
static ngx_int_t ngx_http_bytemark_shm_inherit(ngx_shm_zone_t *zone,
    ngx_http_bytemark_shm_t *shm);
static ngx_int_t ngx_http_bytemark_shm_copy(ngx_shm_zone_t *zone,
    ngx_http_bytemark_shm_t *shm, ngx_shm_zone_t *old);
static ngx_http_bytemark_note_t *ngx_http_bytemark_note_find(
    ngx_http_bytemark_shm_t *shm, uint64_t user_id);


ngx_int_t
ngx_http_bytemark_shm_add(ngx_conf_t *cf, ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_str_t  name = ngx_string("bytemark_state");

    /* a named backend's notes, breakers and lock are its own */
    if (bmcf->name.len) {
        name.data = ngx_pnalloc(cf->pool, name.len + 1 + bmcf->name.len);
        if (name.data == NULL) {
            return NGX_ERROR;
        }

        name.len = ngx_sprintf(name.data, "bytemark_state:%V", &bmcf->name)
                   - name.data;
    }

    ngx_conf_init_size_value(bmcf->notes_size, NGX_HTTP_BYTEMARK_SHM_SIZE);

    bmcf->shm_zone = ngx_shared_memory_add(cf, &name, bmcf->notes_size,
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
    ngx_uint_t                fresh;
    ngx_slab_pool_t          *shpool;
    ngx_http_bytemark_shm_t  *shm;

    /* a reload keeps the notes and the cleanup state */
    shm = ngx_http_bytemark_zone_data(zone, data,
                                      sizeof(ngx_http_bytemark_shm_t), &fresh);
    if (shm == NULL) {
        return NGX_ERROR;
    }

    if (!fresh) {
        return NGX_OK;
    }

    ngx_rbtree_init(&shm->rbtree, &shm->sentinel, ngx_rbtree_insert_value);

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    shpool->log_nomem = 0;

    return ngx_http_bytemark_shm_inherit(zone, shm);
}


/*
 * A reload that resizes the zone gets a new one (nginx reuses a zone of the
 * same size only).  The running zone's notes move into it, or the reload is
 * refused: a note lost is an acknowledged write that a lookup could
 * contradict.  During ngx_init_cycle() ngx_cycle is still the running cycle.
 */

static ngx_int_t
ngx_http_bytemark_shm_inherit(ngx_shm_zone_t *zone,
    ngx_http_bytemark_shm_t *shm)
{
    ngx_uint_t        i;
    ngx_shm_zone_t   *old;
    ngx_list_part_t  *part;

    part = &((ngx_cycle_t *) ngx_cycle)->shared_memory.part;
    old = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_OK;
            }

            part = part->next;
            old = part->elts;
            i = 0;
        }

        if (old[i].tag == zone->tag && old[i].data != NULL
            && old[i].shm.addr != zone->shm.addr
            && old[i].shm.name.len == zone->shm.name.len
            && ngx_strncmp(old[i].shm.name.data, zone->shm.name.data,
                           zone->shm.name.len) == 0)
        {
            return ngx_http_bytemark_shm_copy(zone, shm, &old[i]);
        }
    }
}


static ngx_int_t
ngx_http_bytemark_shm_copy(ngx_shm_zone_t *zone, ngx_http_bytemark_shm_t *shm,
    ngx_shm_zone_t *old)
{
    ngx_uint_t                 n;
    ngx_slab_pool_t           *shpool, *oshpool;
    ngx_rbtree_node_t         *node;
    ngx_http_bytemark_shm_t   *oshm;
    ngx_http_bytemark_note_t  *note;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    oshpool = (ngx_slab_pool_t *) old->shm.addr;
    oshm = old->data;
    n = 0;

    ngx_shmtx_lock(&oshpool->mutex);

    node = (oshm->rbtree.root == oshm->rbtree.sentinel)
           ? NULL : ngx_rbtree_min(oshm->rbtree.root, oshm->rbtree.sentinel);

    for ( /* void */ ; node; node = ngx_rbtree_next(&oshm->rbtree, node)) {

        /* nobody else knows the new zone yet */
        note = ngx_slab_alloc_locked(shpool, sizeof(ngx_http_bytemark_note_t));
        if (note == NULL) {
            ngx_shmtx_unlock(&oshpool->mutex);

            ngx_log_error(NGX_LOG_EMERG, zone->shm.log, 0,
                          "\"bytemark_notes_zone\" size=%uzk cannot hold "
                          "the %uA notes of the running zone: keep the "
                          "size until they are cleared (bytemark_notes)",
                          zone->shm.size / 1024, oshm->notes);
            return NGX_ERROR;
        }

        note->node.key = node->key;
        note->stamp = ((ngx_http_bytemark_note_t *) node)->stamp;
        note->leased = 0;
        ngx_rbtree_insert(&shm->rbtree, &note->node);
        n++;
    }

    shm->notes = n;
    shm->cleanup_pid = oshm->cleanup_pid;
    shm->cleanup_last = oshm->cleanup_last;
    ngx_memcpy(shm->breakers, oshm->breakers, sizeof(shm->breakers));

    ngx_shmtx_unlock(&oshpool->mutex);

    ngx_log_error(NGX_LOG_NOTICE, zone->shm.log, 0,
                  "bytemark: %ui notes moved to the resized zone \"%V\"",
                  n, &zone->shm.name);

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
        note->leased = 0;
        ngx_rbtree_insert(&shm->rbtree, &note->node);
        (void) ngx_atomic_fetch_add(&shm->notes, 1);

    } else if (stamp > note->stamp) {
        note->stamp = stamp;
        /* a delete already under way may predate this write */
        note->leased = 0;
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


/*
 * Up to max notes whose entries nobody is deleting now, leased for lease
 * ms: a delete that fails, or a worker that dies, gives them back then.
 */

ngx_uint_t
ngx_http_bytemark_note_take(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_msec_t lease, uint64_t *users, int64_t *stamps, ngx_uint_t max)
{
    int64_t                    now;
    ngx_uint_t                 n;
    ngx_slab_pool_t           *shpool;
    ngx_rbtree_node_t         *node;
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
    now = ngx_http_bytemark_now_ms();
    n = 0;

    ngx_shmtx_lock(&shpool->mutex);

    if (shm->rbtree.root == shm->rbtree.sentinel) {
        ngx_shmtx_unlock(&shpool->mutex);
        return 0;
    }

    node = ngx_rbtree_min(shm->rbtree.root, shm->rbtree.sentinel);

    while (node && n < max) {
        note = (ngx_http_bytemark_note_t *) node;

        if (note->leased <= now) {
            note->leased = now + (int64_t) lease;
            users[n] = (uint64_t) node->key;
            stamps[n] = note->stamp;
            n++;
        }

        node = ngx_rbtree_next(&shm->rbtree, node);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return n;
}


/* the notes, and the zone's bytes in free pages and in use */

void
ngx_http_bytemark_notes_stats(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t *notes, size_t *used, size_t *free)
{
    ngx_slab_pool_t          *shpool;
    ngx_http_bytemark_shm_t  *shm;

    *notes = 0;
    *used = 0;
    *free = 0;

    if (bmcf->shm_zone == NULL || bmcf->shm_zone->data == NULL) {
        return;
    }

    shm = bmcf->shm_zone->data;
    shpool = (ngx_slab_pool_t *) bmcf->shm_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);
    *free = shpool->pfree * ngx_pagesize;
    ngx_shmtx_unlock(&shpool->mutex);

    *notes = shm->notes;
    *used = bmcf->shm_zone->shm.size - ngx_min(*free,
                                               bmcf->shm_zone->shm.size);
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


/* bytemark_notes_zone size=<size>: the zone of the notes and breakers */

char *
ngx_http_bytemark_set_notes_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t                      *value;
    ngx_http_bytemark_param_err_t   err;

    static ngx_http_bytemark_param_t  params[] = {
        { ngx_string("size"), NGX_HTTP_BYTEMARK_PARAM_SIZE,
          offsetof(ngx_http_bytemark_main_conf_t, notes_size), 0, 0 },
        { ngx_null_string, 0, 0, 0, 0 }
    };

    if (bmcf->notes_size != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_bytemark_parse_params(cf, 1, params, bmcf, &err) != NGX_OK) {

        if (err.problem == NGX_HTTP_BYTEMARK_PARAM_INVALID) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"bytemark_notes_zone\" has an invalid "
                               "size \"%V\"", &err.value);
            return NGX_CONF_ERROR;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_notes_zone\" has an invalid "
                           "parameter \"%V\": write size=<size>",
                           &value[err.arg]);
        return NGX_CONF_ERROR;
    }

    if (bmcf->notes_size < NGX_HTTP_BYTEMARK_SHM_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_notes_zone\" size \"%V\" is too "
                           "small: at least %uzk", &err.value,
                           (size_t) NGX_HTTP_BYTEMARK_SHM_MIN / 1024);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}
