
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The flow layer: what a request does with the backends.  The resolution
 * order of the reads (lookup.c), their answers (answer.c: built, stored,
 * sent), the cache writes a read leaves behind (fill.c), the micro-cache's
 * policy in front of it (microcache.c, with its background refresh in
 * mc_refresh.c and its waiters in mc_wait.c), the request's cleanup
 * (request.c), the periodic sweep of the cache (sweep.c), the writes:
 * an ingest (ingest_flow.c) and a purge (purge_flow.c).
 */

#ifndef _NGX_HTTP_BYTEMARK_FLOW_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_FLOW_H_INCLUDED_


#include "ngx_http_bytemark_mongo.h"
#include "ngx_http_bytemark_mysql.h"
#include "ngx_http_bytemark_response.h"


/* answers: built by response/, stored in the micro-cache, sent (answer.c) */
ngx_int_t ngx_http_bytemark_send_tickets(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_passes_t *passes,
    int64_t timestamp);
ngx_int_t ngx_http_bytemark_send_pass(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a);
ngx_int_t ngx_http_bytemark_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_bytemark_unavailable(ngx_http_request_t *r);

/* lookup (resolution order of SPEC 3.1 / 3.2) */
ngx_int_t ngx_http_bytemark_lookup_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* an ingest: commit, cache update, note, invalidation (ingest_flow.c) */
ngx_int_t ngx_http_bytemark_ingest_commit(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* a purge: the delete, then the micro-cache and the note (purge_flow.c) */
ngx_int_t ngx_http_bytemark_purge_start(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* micro-cache: its policy (its zones are shm/'s) */
ngx_int_t ngx_http_bytemark_microcache_lookup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
ngx_int_t ngx_http_bytemark_microcache_wait(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
void ngx_http_bytemark_microcache_store(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_str_t *body, ngx_str_t *etag);
void ngx_http_bytemark_microcache_release(ngx_http_bytemark_ctx_t *ctx);
void ngx_http_bytemark_lookup_finalize(ngx_http_request_t *r, ngx_int_t rc);

/* the micro-cache's own files: refresh, waiters */
ngx_int_t ngx_http_bytemark_mc_refresh(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, uint64_t gen);
void ngx_http_bytemark_mc_wake(ngx_str_t *key);
void ngx_http_bytemark_mc_unqueue(ngx_http_bytemark_ctx_t *ctx);
ngx_msec_t ngx_http_bytemark_mc_budget(ngx_http_request_t *r);
void ngx_http_bytemark_microcache_invalidate(
    ngx_http_bytemark_main_conf_t *bmcf, uint64_t user_id);

/* the periodic sweep (sweep.c), and the notes' background repair (notes.c) */
ngx_int_t ngx_http_bytemark_cleanup_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);
ngx_int_t ngx_http_bytemark_notes_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf);

/* the cache writes a read leaves behind (fill.c) */
ngx_uint_t ngx_http_bytemark_fill_wanted(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);
void ngx_http_bytemark_fill(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx, ngx_http_bytemark_answer_t *a);
void ngx_http_bytemark_repair(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);

/* the request's cleanup: abandons its call, releases what it holds */
ngx_int_t ngx_http_bytemark_request_cleanup(ngx_http_request_t *r,
    ngx_http_bytemark_ctx_t *ctx);


#endif /* _NGX_HTTP_BYTEMARK_FLOW_H_INCLUDED_ */
