
/*
 * The metrics zone, shared by the store (metrics.c) and its renderings
 * (metrics_render.c), for the files of src/shm/ only.
 */

#ifndef _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_


#include "ngx_http_bytemark_shm.h"


#define NGX_HTTP_BYTEMARK_METRICS_MAGIC    0x626d6d31    /* "bmm1" */

/* fixed, so that the zone is reused whatever the new configuration says */
#define NGX_HTTP_BYTEMARK_METRICS_SIZE     (256 * 1024)
#define NGX_HTTP_BYTEMARK_METRICS_SLOTS    256

#define NGX_HTTP_BYTEMARK_HANDLERS         6      /* index: handler constant */
#define NGX_HTTP_BYTEMARK_CODES            600    /* HTTP status 0 .. 599 */
#define NGX_HTTP_BYTEMARK_SOURCES          4
#define NGX_HTTP_BYTEMARK_BACKENDS         2
#define NGX_HTTP_BYTEMARK_KINDS            4
#define NGX_HTTP_BYTEMARK_BUCKETS          13     /* the last one is +Inf */

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
    ngx_http_bytemark_metrics_slot_t  slots[NGX_HTTP_BYTEMARK_METRICS_SLOTS];
} ngx_http_bytemark_metrics_shm_t;


/* set in init_process; NULL without a zone */
extern ngx_http_bytemark_metrics_shm_t  *ngx_http_bytemark_metrics_shm;

/* bytemark_answers_total{source}, in the order of the answers counters */
extern const char  *ngx_http_bytemark_sources[NGX_HTTP_BYTEMARK_SOURCES];

ngx_uint_t ngx_http_bytemark_metrics_alive(ngx_atomic_uint_t pid);


#endif /* _NGX_HTTP_BYTEMARK_METRICS_PRIVATE_H_INCLUDED_ */
