
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */


#include "ngx_http_bytemark_shm.h"


/*
 * nginx's zone-init idiom, for the module's zones: a reload hands the old
 * zone's data over, a zone that exists already (a binary upgrade) has it in
 * its slab pool, a new one gets "size" zeroed bytes ("fresh").  NULL: no
 * memory.
 */

void *
ngx_http_bytemark_zone_data(ngx_shm_zone_t *zone, void *data, size_t size,
    ngx_uint_t *fresh)
{
    ngx_slab_pool_t  *shpool;

    *fresh = 0;

    if (data) {
        zone->data = data;
        return data;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return zone->data;
    }

    data = ngx_slab_calloc(shpool, size);
    if (data == NULL) {
        return NULL;
    }

    shpool->data = data;
    zone->data = data;
    *fresh = 1;

    return data;
}
