
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The shared-memory layer: what every worker sees at once.  Per-user cache
 * notes, the cleanup lock and the breaker states (shm.c), a circuit breaker
 * per backend (breaker.c) and each MySQL server's passive health in its
 * breaker's slot (passive.c), the micro-cache's zones (mc_zone.c), the metrics
 * store that implements the core's metrics interface (metrics.c) and its
 * renderings (metrics_render.c, in Prometheus text metrics_prom.c, in JSON
 * metrics_json.c).
 */

#ifndef _NGX_HTTP_BYTEMARK_SHM_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_SHM_H_INCLUDED_


#include "ngx_http_bytemark_call.h"


/* breakers' shared state, in the zone of ngx_http_bytemark_shm.c */
typedef struct {
    ngx_atomic_t                  failures;     /* consecutive */
    ngx_atomic_t                  open_until;   /* ms; 0: closed */
    ngx_atomic_t                  probe_at;     /* ms; 0: no probe out */

    /* a MySQL server's passive health (passive.c), in its breaker's slot */
    ngx_atomic_t                  fails;        /* in the window */
    ngx_atomic_t                  window;       /* ms: its first failure */
    ngx_atomic_t                  down_until;   /* ms; 0: up */
    ngx_atomic_t                  down_probe;   /* ms; 0: no probe out */
} ngx_http_bytemark_breaker_t;


/* a micro-cache zone, in ngx_http_bytemark_mc_zone.c */
typedef struct {
    ngx_rbtree_t                  rbtree;
    ngx_rbtree_node_t             sentinel;
    ngx_queue_t                   lru;          /* most recent first */
    uint64_t                      gen;          /* the last refresh's */
} ngx_http_bytemark_mc_sh_t;


typedef struct {
    ngx_http_bytemark_mc_sh_t    *sh;
    ngx_slab_pool_t              *shpool;
} ngx_http_bytemark_mc_t;


/* one answer, or a placeholder while its lookup runs */
typedef struct {
    ngx_rbtree_node_t             node;         /* key: crc32 of the key */
    ngx_queue_t                   queue;
    uint64_t                      user_id;
    int64_t                       expires;      /* ms; 0: no answer yet */
    int64_t                       updating;     /* ms until; 0: nobody */
    uint64_t                      gen;          /* who is updating */
    u_short                       key_len;
    u_short                       etag_len;
    u_char                        source_len;
    size_t                        body_len;
    u_char                        data[1];      /* key etag source body */
} ngx_http_bytemark_mc_node_t;


/* shared state */
void *ngx_http_bytemark_zone_data(ngx_shm_zone_t *zone, void *data,
    size_t size, ngx_uint_t *fresh);
ngx_int_t ngx_http_bytemark_shm_add(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf);
ngx_int_t ngx_http_bytemark_note_set(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t stamp);
ngx_int_t ngx_http_bytemark_note_get(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t *stamp);
void ngx_http_bytemark_note_clear(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id, int64_t upto);
ngx_uint_t ngx_http_bytemark_note_take(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_msec_t lease, uint64_t *users, int64_t *stamps, ngx_uint_t max);
void ngx_http_bytemark_notes_stats(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t *notes, size_t *used, size_t *free);
char *ngx_http_bytemark_set_notes_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_bytemark_cleanup_lock(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_msec_t interval, ngx_msec_t lease, int64_t *stamp);
void ngx_http_bytemark_cleanup_unlock(ngx_http_bytemark_main_conf_t *bmcf,
    int64_t stamp);

/* users who just wrote, for read-your-writes (recent.c) */
ngx_int_t ngx_http_bytemark_recent_add(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_recent_set(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id);
ngx_uint_t ngx_http_bytemark_recent_get(ngx_http_bytemark_main_conf_t *bmcf,
    uint64_t user_id);

ngx_http_bytemark_breaker_t *ngx_http_bytemark_shm_breakers(
    ngx_http_bytemark_main_conf_t *bmcf);

/* circuit breakers */
ngx_int_t ngx_http_bytemark_breaker_allow(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend);
ngx_int_t ngx_http_bytemark_breaker_is_open(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t backend);
ngx_int_t ngx_http_bytemark_breaker_closed(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_uint_t backend);
void ngx_http_bytemark_breaker_result(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t backend, ngx_uint_t ok, int64_t cost);

/* a MySQL server's passive health (passive.c), by breaker slot */
#define NGX_HTTP_BYTEMARK_HEALTH_UP     0
#define NGX_HTTP_BYTEMARK_HEALTH_DOWN   1
#define NGX_HTTP_BYTEMARK_HEALTH_PROBE  2   /* down, due for a probe */

ngx_uint_t ngx_http_bytemark_health_state(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot);
ngx_int_t ngx_http_bytemark_health_allow(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t claim);
void ngx_http_bytemark_health_result(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t ok, const char *cause);
void ngx_http_bytemark_health_observed(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t ok, int64_t cost);

/*
 * the micro-cache's zones (mc_zone.c): find, alloc, insert, touch and
 * delete with the zone locked, drop_user() locks it
 */
char *ngx_http_bytemark_set_microcache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_bytemark_mc_node_t *ngx_http_bytemark_mc_find(
    ngx_http_bytemark_mc_t *mc, ngx_str_t *key, uint32_t hash);
ngx_http_bytemark_mc_node_t *ngx_http_bytemark_mc_alloc(
    ngx_http_bytemark_mc_t *mc, size_t size);
void ngx_http_bytemark_mc_insert(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n);
void ngx_http_bytemark_mc_touch(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n);
void ngx_http_bytemark_mc_delete(ngx_http_bytemark_mc_t *mc,
    ngx_http_bytemark_mc_node_t *n);
ngx_uint_t ngx_http_bytemark_mc_drop_user(ngx_http_bytemark_mc_t *mc,
    uint64_t user_id);

/*
 * The metrics store (metrics.c) and its renderings (metrics_render.c).
 * The call layer, below, reaches the store and the breakers through the
 * observer that metrics_init_process() registers with it.
 */
#define ngx_http_bytemark_metrics_inc(metric)                                 \
    ngx_http_bytemark_metrics_add(metric, 1)

void ngx_http_bytemark_metrics_add(ngx_uint_t metric, ngx_uint_t n);
void ngx_http_bytemark_metrics_backend_error(ngx_uint_t backend,
    ngx_uint_t kind);
void ngx_http_bytemark_metrics_call_posted(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_call_timed_out(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_call_completed(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_metrics_mongo_pop(void);
void ngx_http_bytemark_metrics_mongo_push(void);
void ngx_http_bytemark_metrics_thread_task(ngx_int_t n);
void ngx_http_bytemark_metrics_mysql_acquire(ngx_uint_t open);
void ngx_http_bytemark_metrics_mysql_release(ngx_uint_t open);
ngx_int_t ngx_http_bytemark_metrics_add_zone(ngx_conf_t *cf);
ngx_int_t ngx_http_bytemark_metrics_postconfiguration(ngx_conf_t *cf);
void ngx_http_bytemark_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_metrics_exit_process(void);
ngx_int_t ngx_http_bytemark_metrics_render(ngx_http_request_t *r,
    ngx_uint_t prometheus, ngx_str_t *body);


#endif /* _NGX_HTTP_BYTEMARK_SHM_H_INCLUDED_ */
