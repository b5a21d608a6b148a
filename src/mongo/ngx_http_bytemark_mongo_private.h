
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MongoDB side's private header: the driver's types, for the files of
 * src/mongo/ only (t/02-layers.t refuses it anywhere else).
 */

#ifndef _NGX_HTTP_BYTEMARK_MONGO_PRIVATE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_MONGO_PRIVATE_H_INCLUDED_


#include "ngx_http_bytemark_mongo.h"

#include <mongoc/mongoc.h>


struct ngx_http_bytemark_mongo_s {
    mongoc_uri_t          *uri;
    mongoc_client_pool_t  *pool;
    char                  *db;
    char                  *coll;
    /* from bson_new(): a bson_t wants 128-byte alignment, pools give less */
    bson_t                *find_opts;     /* one user: limit 1 */
    bson_t                *batch_opts;    /* many users */

    /* the backend's lookups that wait for a task (mongo_batch.c) */
    ngx_queue_t            batch_queue;
    ngx_uint_t             batch_queued;
    ngx_uint_t             batch_running;
    ngx_uint_t             batch_max;      /* bytemark_mongo_batch */
    ngx_event_t            batch_wake;
};


mongoc_collection_t *ngx_http_bytemark_mongo_acquire(
    ngx_http_bytemark_mongo_t *mongo, mongoc_client_t **client,
    ngx_msec_t wait, bson_error_t *error);
void ngx_http_bytemark_mongo_release(ngx_http_bytemark_mongo_t *mongo,
    mongoc_client_t *client, mongoc_collection_t *coll);
void ngx_http_bytemark_mongo_error(ngx_http_bytemark_call_t *call,
    bson_error_t *error);
void ngx_http_bytemark_mongo_cause(char *buf, size_t size,
    bson_error_t *error);
void ngx_http_bytemark_mongo_batch_init(ngx_http_bytemark_mongo_t *mongo,
    ngx_uint_t max);
void ngx_http_bytemark_mongo_batch_exit(ngx_http_bytemark_mongo_t *mongo);
const bson_t *ngx_http_bytemark_mongo_batch_filter(
    ngx_http_bytemark_mongo_t *mongo, ngx_http_bytemark_call_t **m,
    ngx_uint_t n, bson_t *filter);
ngx_int_t ngx_http_bytemark_mongo_doc_user(const bson_t *doc, uint64_t *id);
ngx_int_t ngx_http_bytemark_mongo_answer_copy(ngx_http_bytemark_answer_t *dst,
    ngx_http_bytemark_answer_t *src);
void ngx_http_bytemark_mongo_secrets(ngx_str_t *uri);
void ngx_http_bytemark_mongo_scrub(char *buf, size_t size);
void ngx_http_bytemark_mongo_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data);

/*
 * An ingest's cache update (ngx_http_bytemark_mongo_ingest.c, _write.c):
 * one place per pass uuid of the batch, sorted by uuid.
 */
typedef struct {
    ngx_http_bytemark_ingest_pass_t  *pass;      /* its last in the batch */
    ngx_uint_t                        first;     /* its first, by position */
    ngx_uint_t                        own;       /* 0: passes, 1: passes4 */
    int64_t                           at[2];     /* index in each, or -1 */
    bson_t                           *element;   /* at[!own], as stored */
    unsigned                          placed:1;  /* in its array, logged */
    unsigned                          cleared:1; /* not in the other one */
    unsigned                          put:1;     /* the write places it */
    unsigned                          pull:1;    /* the write pulls it */
} ngx_http_bytemark_mongo_place_t;


typedef struct {
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_call_ingest_t  *ingest;    /* the call's payload */
    mongoc_collection_t              *coll;
    const char                       *server_time;
    ngx_http_bytemark_mongo_place_t  *places;
    ngx_uint_t                        nplaces;
    unsigned                          exists:1;  /* the entry was read */
} ngx_http_bytemark_mongo_plan_t;


#define NGX_HTTP_BYTEMARK_WRITE_SET   0     /* replacements, by index */
#define NGX_HTTP_BYTEMARK_WRITE_PUSH  1     /* appends, and pulls */
#define NGX_HTTP_BYTEMARK_BOTH        2     /* a target: either array */

extern const char  *ngx_http_bytemark_mongo_arrays[2];

ngx_http_bytemark_mongo_place_t *ngx_http_bytemark_mongo_place(
    ngx_http_bytemark_mongo_plan_t *plan, const u_char *uuid);
ngx_int_t ngx_http_bytemark_mongo_ingest_write(
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind, ngx_uint_t target);

/* read-only after init_process (ngx_http_bytemark_mongo.c) */
extern bson_t  *ngx_http_bytemark_mongo_upsert_opts;
extern bson_t  *ngx_http_bytemark_mongo_write_opts;


#endif /* _NGX_HTTP_BYTEMARK_MONGO_PRIVATE_H_INCLUDED_ */
