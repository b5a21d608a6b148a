
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The metrics zone, shared by the store (metrics.c) and its renderings
 * (metrics_render.c, metrics_prom.c, metrics_json.c), and what the
 * renderings share, for the files of src/shm/ only.
 */

#ifndef _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_


#include "ngx_http_bytemark_shm.h"


#define NGX_HTTP_BYTEMARK_METRICS_MAGIC    0x626d6d32    /* "bmm2" */

/* fixed, so that the zone is reused whatever the new configuration says */
#define NGX_HTTP_BYTEMARK_METRICS_SIZE     (256 * 1024)
#define NGX_HTTP_BYTEMARK_METRICS_SLOTS    256

#define NGX_HTTP_BYTEMARK_HANDLERS         7      /* index: handler constant */
#define NGX_HTTP_BYTEMARK_CODES            600    /* HTTP status 0 .. 599 */
#define NGX_HTTP_BYTEMARK_SOURCES          4
#define NGX_HTTP_BYTEMARK_KINDS            4
#define NGX_HTTP_BYTEMARK_BUCKETS          13     /* the last one is +Inf */
/* bytemark_mongo_batch_size: le 1, 2, 4 ... 64, +Inf */
#define NGX_HTTP_BYTEMARK_BATCH_BUCKETS    8

/* room that one formatted line or JSON member never exceeds */
#define NGX_HTTP_BYTEMARK_OUT_LINE         512


/* one worker's gauges, padded to 64 bytes: workers seldom share a line */
typedef struct {
    ngx_atomic_t                  pid;             /* 0: free */
    ngx_atomic_t                  calls;           /* posted, not completed */
    ngx_atomic_t                  busy[NGX_HTTP_BYTEMARK_BACKENDS];
    ngx_atomic_t                  mysql_idle;
    ngx_atomic_t                  mongo_clients;   /* created by the pool */
    ngx_atomic_t                  pad[2];
} ngx_http_bytemark_metrics_slot_t;


typedef struct {
    ngx_uint_t                    magic;
    size_t                        size;
    ngx_atomic_t                  requests[NGX_HTTP_BYTEMARK_HANDLERS]
                                          [NGX_HTTP_BYTEMARK_CODES];
    ngx_atomic_t                  answers[NGX_HTTP_BYTEMARK_SOURCES];
    ngx_atomic_t                  errors[NGX_HTTP_BYTEMARK_BACKENDS]
                                        [NGX_HTTP_BYTEMARK_KINDS];
    /* per bucket, not cumulative: one atomic add per observation */
    ngx_atomic_t                  buckets[NGX_HTTP_BYTEMARK_BACKENDS]
                                         [NGX_HTTP_BYTEMARK_BUCKETS];
    ngx_atomic_t                  sum_us[NGX_HTTP_BYTEMARK_BACKENDS];
    ngx_atomic_t                  counters[NGX_HTTP_BYTEMARK_M_N];
    ngx_atomic_t                  batch[NGX_HTTP_BYTEMARK_BATCH_BUCKETS];
    ngx_atomic_t                  batch_sum;
    ngx_http_bytemark_metrics_slot_t  slots[NGX_HTTP_BYTEMARK_METRICS_SLOTS];
} ngx_http_bytemark_metrics_shm_t;


/* set in init_process; NULL without a zone */
extern ngx_http_bytemark_metrics_shm_t  *ngx_http_bytemark_metrics_shm;

/* bytemark_answers_total{source}, in the order of the answers counters */
extern const char  *ngx_http_bytemark_sources[NGX_HTTP_BYTEMARK_SOURCES];

ngx_uint_t ngx_http_bytemark_metrics_alive(ngx_atomic_uint_t pid);


/* a growing output buffer; a failed allocation is reported once, at the end */
typedef struct {
    ngx_pool_t                   *pool;
    u_char                       *start;
    u_char                       *pos;
    u_char                       *end;
    ngx_uint_t                    failed;
} ngx_http_bytemark_out_t;


/*
 * A backend on the status page, the default one first: its breakers are
 * read from its conf, its notes once per page.  label is what its series
 * carry, escaped for the format: "upstream=\"<name>\"," in Prometheus,
 * the bare name in JSON; empty for the default backend.
 */
typedef struct {
    ngx_http_bytemark_main_conf_t  *bmcf;
    ngx_str_t                       label;
    ngx_uint_t                      notes;
    size_t                          used;
    size_t                          free;
} ngx_http_bytemark_metrics_backend_t;


/*
 * A metric family whose series are all present, zeros included: up to two
 * labels, n[0] x n[1] values.
 */
typedef struct {
    const char                   *name;
    const char                   *type;
    const char                   *help;
    const char                   *keys[2];        /* label names, or NULL */
    const char                  **labels[2];      /* label values */
    ngx_uint_t                    n[2];
} ngx_http_bytemark_family_t;


/* the renderings' common part (metrics_render.c) */
extern const char  *ngx_http_bytemark_handler_names[NGX_HTTP_BYTEMARK_HANDLERS];
extern const char  *ngx_http_bytemark_backends[NGX_HTTP_BYTEMARK_BACKENDS];
extern const char  *ngx_http_bytemark_le[NGX_HTTP_BYTEMARK_BUCKETS];

void ngx_http_bytemark_out(ngx_http_bytemark_out_t *o, const char *fmt, ...);
void ngx_http_bytemark_out_reserve(ngx_http_bytemark_out_t *o, size_t size);
ngx_uint_t ngx_http_bytemark_breaker_servers(
    ngx_http_bytemark_main_conf_t *bmcf);

/* Prometheus text (metrics_prom.c) */
void ngx_http_bytemark_metrics_prom_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v);
void ngx_http_bytemark_metrics_prom_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
void ngx_http_bytemark_metrics_prom_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
void ngx_http_bytemark_metrics_prom_build_info(ngx_http_bytemark_out_t *o);
void ngx_http_bytemark_metrics_prom_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n);
void ngx_http_bytemark_metrics_prom_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n);

/* JSON (metrics_json.c) */
void ngx_http_bytemark_metrics_json_family(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_family_t *f, int64_t *v);
void ngx_http_bytemark_metrics_json_requests(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
void ngx_http_bytemark_metrics_json_histogram(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_shm_t *m);
void ngx_http_bytemark_metrics_json_build_info(ngx_http_bytemark_out_t *o);
void ngx_http_bytemark_metrics_json_breakers(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_main_conf_t *bmcf);
void ngx_http_bytemark_metrics_json_notes(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be);
void ngx_http_bytemark_metrics_json_upstreams(ngx_http_bytemark_out_t *o,
    ngx_http_bytemark_metrics_backend_t *be, ngx_uint_t n);


#endif /* _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_ */
