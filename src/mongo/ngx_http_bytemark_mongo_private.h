
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
};


mongoc_collection_t *ngx_http_bytemark_mongo_acquire(
    ngx_http_bytemark_mongo_t *mongo, mongoc_client_t **client);
void ngx_http_bytemark_mongo_release(ngx_http_bytemark_mongo_t *mongo,
    mongoc_client_t *client, mongoc_collection_t *coll);
void ngx_http_bytemark_mongo_error(ngx_http_bytemark_call_t *call,
    bson_error_t *error);
void ngx_http_bytemark_mongo_cause(char *buf, size_t size,
    bson_error_t *error);
void ngx_http_bytemark_mongo_batch_init(void);
void ngx_http_bytemark_mongo_secrets(ngx_str_t *uri);
void ngx_http_bytemark_mongo_scrub(char *buf, size_t size);

/* read-only after init_process (ngx_http_bytemark_mongo.c) */
extern bson_t  *ngx_http_bytemark_mongo_upsert_opts;
extern bson_t  *ngx_http_bytemark_mongo_write_opts;


#endif /* _NGX_HTTP_BYTEMARK_MONGO_PRIVATE_H_INCLUDED_ */
