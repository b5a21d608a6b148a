
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Which MySQL server a read asks (bytemark_mysql_read).  The caller
 * (ngx_http_bytemark_lookup.c) tries the servers in the order given here,
 * skipping one whose breaker is open, each with its slice of the budget:
 *
 *   primary:  the primary, then the replicas in their order;
 *   spread:   one replica chosen by weight, then the other replicas in
 *             their order after it, then the primary.
 *
 * The choice is smooth weighted round robin, per worker, as nginx's
 * upstream round robin spreads requests: each replica's turn grows by its
 * weight at every read, the one furthest ahead is chosen and set back by
 * the sum of the weights.  Weights 2 and 1 give A A B, interleaved
 * (A B A ...), never long runs.  A user who wrote through this nginx within
 * bytemark_mysql_read_your_writes reads as under "primary".  Writes never
 * come here: they go to the primary.
 */


#include "ngx_http_bytemark_mysql_private.h"


static ngx_uint_t ngx_http_bytemark_mysql_spread(
    ngx_http_bytemark_mysql_pool_t *pool);


/* the server a read tries first: 0, the primary, or a replica */

ngx_uint_t
ngx_http_bytemark_mysql_read_first(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id)
{
    if (bmcf->mysql_read != NGX_HTTP_BYTEMARK_READ_SPREAD
        || bmcf->mysql == NULL || bmcf->mysql->nnodes < 2)
    {
        return 0;
    }

    if (ngx_http_bytemark_recent_get(bmcf, user_id)) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "bytemark: user %uL wrote recently: "
                       "read from the primary", user_id);
        return 0;
    }

    return ngx_http_bytemark_mysql_spread(bmcf->mysql);
}


/* the k-th server to try (k from 0), for a read that began with "first" */

ngx_uint_t
ngx_http_bytemark_mysql_read_server(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t first, ngx_uint_t k)
{
    ngx_uint_t  n;

    if (first == 0) {
        return k;
    }

    /* the replicas from the chosen one on, wrapping, then the primary */
    n = bmcf->mysql_servers->nelts - 1;

    if (k == n) {
        return 0;
    }

    return 1 + (first - 1 + k) % n;
}


/* smooth weighted round robin over the replicas (nodes 1 .. n - 1) */

static ngx_uint_t
ngx_http_bytemark_mysql_spread(ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_int_t                        total;
    ngx_uint_t                       i, best;
    ngx_http_bytemark_mysql_node_t  *node;

    total = 0;
    best = 1;

    for (i = 1; i < pool->nnodes; i++) {
        node = &pool->nodes[i];

        node->current += (ngx_int_t) node->conf->weight;
        total += (ngx_int_t) node->conf->weight;

        if (node->current > pool->nodes[best].current) {
            best = i;
        }
    }

    pool->nodes[best].current -= total;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: read spread to mysql server #%ui", best + 1);

    return best;
}
