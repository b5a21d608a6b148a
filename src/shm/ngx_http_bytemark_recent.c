
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Read-your-writes (bytemark_mysql_read_your_writes): when each user last
 * wrote through this nginx, in shared memory so that every worker knows.
 * With "bytemark_mysql_read spread", a user who wrote within the window
 * reads from the primary, not from a replica that may lag.
 *
 * The table is a fixed array of slots, a user hashed to one, each holding
 * the newest write time of its users (ngx_current_msec: the monotonic clock,
 * the same in every process).  It never fills up and needs no lock: a slot
 * only moves forward, with compare-and-swap.  Two users sharing a slot is
 * safe in the direction that matters: the other user reads from the primary
 * too during the window, never a writer from a replica.  One table serves
 * every backend; each compares with its own window.
 */


#include "ngx_http_bytemark_shm.h"


/* 64k slots: 1000 writes a second within 5s send some 8% of reads home */
#define NGX_HTTP_BYTEMARK_RECENT_SLOTS  65536
#define NGX_HTTP_BYTEMARK_RECENT_SIZE                                         \
    (NGX_HTTP_BYTEMARK_RECENT_SLOTS * sizeof(ngx_atomic_t) + 64 * 1024)


static ngx_int_t ngx_http_bytemark_recent_init(ngx_shm_zone_t *zone,
    void *data);
static ngx_atomic_t *ngx_http_bytemark_recent_slot(
    ngx_http_bytemark_main_conf_t *bmcf, uint64_t user_id);


/* configuration: the zone, shared by every backend that spreads reads */

ngx_int_t
ngx_http_bytemark_recent_add(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_str_t  name = ngx_string("bytemark_recent_writes");

    bmcf->recent_zone = ngx_shared_memory_add(cf, &name,
                                              NGX_HTTP_BYTEMARK_RECENT_SIZE,
                                              &ngx_http_bytemark_module);
    if (bmcf->recent_zone == NULL) {
        return NGX_ERROR;
    }

    bmcf->recent_zone->init = ngx_http_bytemark_recent_init;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_recent_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_uint_t  fresh;

    /* a reload: the writes of the last seconds still count */
    if (ngx_http_bytemark_zone_data(zone, data,
            NGX_HTTP_BYTEMARK_RECENT_SLOTS * sizeof(ngx_atomic_t), &fresh)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_atomic_t *
ngx_http_bytemark_recent_slot(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id)
{
    uint64_t       h;
    ngx_atomic_t  *slots;

    slots = bmcf->recent_zone->data;

    /* user ids are often dense: mixed (splitmix64's finalizer) */
    h = user_id;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;

    return &slots[h & (NGX_HTTP_BYTEMARK_RECENT_SLOTS - 1)];
}


/* the user's write committed (or may have): now */

void
ngx_http_bytemark_recent_set(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id)
{
    ngx_atomic_t      *slot;
    ngx_atomic_uint_t  old, now;

    if (bmcf->recent_zone == NULL || bmcf->recent_zone->data == NULL) {
        return;
    }

    slot = ngx_http_bytemark_recent_slot(bmcf, user_id);
    now = (ngx_atomic_uint_t) ngx_current_msec;

    /* never back: another worker may have stored a later write */
    for ( ;; ) {
        old = *slot;

        if (old != 0 && (ngx_msec_int_t) (now - old) <= 0) {
            return;
        }

        if (ngx_atomic_cmp_set(slot, old, now)) {
            break;
        }
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: user %uL wrote: reads from the primary",
                   user_id);
}


/* did the user write within the backend's window? */

ngx_uint_t
ngx_http_bytemark_recent_get(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id)
{
    ngx_atomic_uint_t  at;

    if (bmcf->mysql_rw == 0 || bmcf->recent_zone == NULL
        || bmcf->recent_zone->data == NULL)
    {
        return 0;
    }

    at = *ngx_http_bytemark_recent_slot(bmcf, user_id);

    if (at == 0) {
        return 0;
    }

    return (ngx_msec_int_t) (ngx_current_msec - (ngx_msec_t) at)
           < (ngx_msec_int_t) bmcf->mysql_rw;
}
