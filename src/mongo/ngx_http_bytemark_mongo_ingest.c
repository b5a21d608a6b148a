
/*
 * The cache side of an ingest, in a pool thread: each pass the MySQL
 * commit wrote is put into the user's cache entry without rewriting the
 * rest (the steps are described below).  The client pool and the other
 * writes are ngx_http_bytemark_mongo.c.
 */


#include "ngx_http_bytemark_mongo_private.h"




/*
 * thread: the cache side of an ingest (SPEC 3.3 step 2), one pass at a time,
 * each with one atomic update, never a blind read-modify-write:
 *
 *   1. find where the pass is in its array (only the pass_uuid fields);
 *   2. it is at index i: replace it there, with a filter that matches only
 *      while element i still holds that pass (a compare-and-set: an entry
 *      changed meanwhile does not match, and 1 runs again);
 *   3. it is not there: append it, upserting the entry, with a filter that
 *      matches only while the array lacks it; a new entry is marked
 *      bytemark_incomplete, since it holds only this pass.  Another ingest
 *      that appends the same pass first makes the upsert hit the unique
 *      index, and 1 runs again.
 *
 * Why not the positional "$" of MongoDB ({"passes.$": …} with the pass in
 * the filter), which would save step 1: FerretDB 1.24 implements neither
 * "$" nor arrayFilters, and an element addressed by its index works on
 * both.  A pass that changed version is pulled from the other array.  Each
 * update appends the log entry and raises the entry's timestamp to the
 * commit time ($max).
 */

#define NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS  4


/* where an ingested pass is in the entry: index -1 is "not there" */
typedef struct {
    int64_t      index;         /* in its own array */
    int64_t      other_index;   /* in the other array (a version change) */
    bson_t      *other;         /* that element as stored, to $pull it */
} ngx_http_bytemark_mongo_place_t;


static ngx_int_t ngx_http_bytemark_mongo_ingest_pass(
    mongoc_collection_t *coll, ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_ingest_pass_t *p, const char *server_time);
static ngx_int_t ngx_http_bytemark_mongo_ingest_locate(
    mongoc_collection_t *coll, ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_ingest_pass_t *p, ngx_http_bytemark_mongo_place_t *at);
static ngx_int_t ngx_http_bytemark_mongo_ingest_read(
    mongoc_collection_t *coll, ngx_http_bytemark_call_t *call,
    const bson_t *opts, bson_t **doc);
static int64_t ngx_http_bytemark_mongo_pass_index(const bson_t *doc,
    const char *array, const u_char *uuid, bson_iter_t *elem);
static void ngx_http_bytemark_mongo_ingest_filter(bson_t *filter,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p,
    ngx_http_bytemark_mongo_place_t *at);
static bson_t *ngx_http_bytemark_mongo_ingest_update(
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p,
    const char *server_time, ngx_http_bytemark_mongo_place_t *at);


void
ngx_http_bytemark_mongo_ingest(ngx_http_bytemark_call_t *call)
{
    char                        server_time[NGX_HTTP_BYTEMARK_ISO_LEN];
    ngx_uint_t                  i;
    bson_error_t                error;
    mongoc_client_t            *client;
    mongoc_collection_t        *coll;
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = call->bmcf->mongo;

    ngx_http_bytemark_iso_time(call->answer.timestamp, server_time);

    coll = ngx_http_bytemark_mongo_acquire(mongo, &client, call->timeout,
                                           &error);
    if (coll == NULL) {
        call->cache_failed = 1;
        ngx_http_bytemark_mongo_cause(call->cache_error,
                                      sizeof(call->cache_error), &error);
        return;
    }

    for (i = 0; i < call->npasses; i++) {
        if (ngx_http_bytemark_mongo_ingest_pass(coll, call, &call->passes[i],
                                                server_time)
            != NGX_OK)
        {
            call->cache_failed = 1;
            break;
        }
    }

    ngx_http_bytemark_mongo_release(mongo, client, coll);
}


static ngx_int_t
ngx_http_bytemark_mongo_ingest_pass(mongoc_collection_t *coll,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p,
    const char *server_time)
{
    bool                             ok;
    bson_t                           filter, reply, *update;
    int64_t                          matched;
    bson_iter_t                      it;
    bson_error_t                     error;
    ngx_int_t                        rc;
    ngx_uint_t                       attempt;
    ngx_http_bytemark_mongo_place_t  at;

    for (attempt = 0; attempt < NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS; attempt++) {

        rc = ngx_http_bytemark_mongo_ingest_locate(coll, call, p, &at);

        if (rc == NGX_AGAIN) {
            continue;
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        update = ngx_http_bytemark_mongo_ingest_update(call, p, server_time,
                                                       &at);
        if (update == NULL) {
            if (at.other) {
                bson_destroy(at.other);
            }

            snprintf(call->cache_error, sizeof(call->cache_error),
                     "pass %.36s cannot be converted to BSON", p->uuid);
            return NGX_ERROR;
        }

        ngx_http_bytemark_mongo_ingest_filter(&filter, call, p, &at);

        ok = mongoc_collection_update_one(coll, &filter, update,
                                          at.index < 0
                                          ? ngx_http_bytemark_mongo_upsert_opts
                                          : ngx_http_bytemark_mongo_write_opts,
                                          &reply, &error);
        matched = 0;

        if (ok && bson_iter_init_find(&it, &reply, "matchedCount")) {
            matched = bson_iter_as_int64(&it);
        }

        if (ok && bson_iter_init_find(&it, &reply, "upsertedCount")) {
            matched += bson_iter_as_int64(&it);
        }

        bson_destroy(&reply);
        bson_destroy(update);
        bson_destroy(&filter);

        if (at.other) {
            bson_destroy(at.other);
        }

        if (ok && matched) {
            return NGX_OK;
        }

        if (!ok && error.code != MONGOC_ERROR_DUPLICATE_KEY) {
            ngx_http_bytemark_mongo_cause(call->cache_error,
                                          sizeof(call->cache_error), &error);
            return NGX_ERROR;
        }

        /* the entry changed between the read and the write: read again */
    }

    snprintf(call->cache_error, sizeof(call->cache_error),
             "pass %.36s: concurrent writes kept the update from applying",
             p->uuid);

    return NGX_ERROR;
}


/*
 * thread: where the pass is.  The first read takes only the pass_uuid
 * fields of both arrays; only a pass that changed version (found in the
 * other array) costs a second read, of that array, for the element as it
 * is stored: $pull removes an element equal to the one given, which is
 * what both MongoDB and FerretDB 1.24 match (FerretDB's $pull takes no
 * query condition).
 */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_locate(mongoc_collection_t *coll,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p,
    ngx_http_bytemark_mongo_place_t *at)
{
    bson_t       opts, proj, *doc;
    bson_iter_t  elem;
    const char  *array, *other;

    array = (p->version == 4) ? "passes4" : "passes";
    other = (p->version == 4) ? "passes" : "passes4";

    at->index = -1;
    at->other_index = -1;
    at->other = NULL;

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    BSON_APPEND_INT32(&proj, "passes.pass_uuid", 1);
    BSON_APPEND_INT32(&proj, "passes4.pass_uuid", 1);
    bson_append_document_end(&opts, &proj);

    if (ngx_http_bytemark_mongo_ingest_read(coll, call, &opts, &doc)
        != NGX_OK)
    {
        bson_destroy(&opts);
        return NGX_ERROR;
    }

    bson_destroy(&opts);

    if (doc == NULL) {
        return NGX_OK;
    }

    at->index = ngx_http_bytemark_mongo_pass_index(doc, array, p->uuid, NULL);
    at->other_index = ngx_http_bytemark_mongo_pass_index(doc, other, p->uuid,
                                                         NULL);
    bson_destroy(doc);

    if (at->other_index < 0) {
        return NGX_OK;
    }

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    BSON_APPEND_INT32(&proj, other, 1);
    bson_append_document_end(&opts, &proj);

    if (ngx_http_bytemark_mongo_ingest_read(coll, call, &opts, &doc)
        != NGX_OK)
    {
        bson_destroy(&opts);
        return NGX_ERROR;
    }

    bson_destroy(&opts);

    /* gone or moved since the first read: NGX_AGAIN reads again */
    if (doc != NULL
        && ngx_http_bytemark_mongo_pass_index(doc, other, p->uuid, &elem)
           == at->other_index)
    {
        uint32_t        len;
        const uint8_t  *data;

        bson_iter_document(&elem, &len, &data);
        at->other = bson_new_from_data(data, len);
    }

    if (doc != NULL) {
        bson_destroy(doc);
    }

    return (at->other != NULL) ? NGX_OK : NGX_AGAIN;
}


/* thread: the user's entry through the projection in opts, or NULL */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_read(mongoc_collection_t *coll,
    ngx_http_bytemark_call_t *call, const bson_t *opts, bson_t **doc)
{
    bson_t            filter;
    bson_error_t      error;
    const bson_t     *found;
    mongoc_cursor_t  *cursor;

    *doc = NULL;

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);

    cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);

    if (mongoc_cursor_next(cursor, &found)) {
        *doc = bson_copy(found);

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_bytemark_mongo_cause(call->cache_error,
                                          sizeof(call->cache_error), &error);
        mongoc_cursor_destroy(cursor);
        bson_destroy(&filter);
        return NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);

    return NGX_OK;
}


/* the index of the pass in doc's array, or -1; elem, if given, is left on it */

static int64_t
ngx_http_bytemark_mongo_pass_index(const bson_t *doc, const char *array,
    const u_char *uuid, bson_iter_t *elem)
{
    int64_t        i;
    uint32_t       len;
    bson_iter_t    it, e, field;
    const char    *s;

    if (!bson_iter_init_find(&it, doc, array)
        || !BSON_ITER_HOLDS_ARRAY(&it)
        || !bson_iter_recurse(&it, &e))
    {
        return -1;
    }

    for (i = 0; bson_iter_next(&e); i++) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&e)
            || !bson_iter_recurse(&e, &field)
            || !bson_iter_find(&field, "pass_uuid")
            || !BSON_ITER_HOLDS_UTF8(&field))
        {
            continue;
        }

        s = bson_iter_utf8(&field, &len);

        if (len == NGX_HTTP_BYTEMARK_UUID_LEN
            && ngx_memcmp(s, uuid, len) == 0)
        {
            if (elem) {
                *elem = e;
            }

            return i;
        }
    }

    return -1;
}


/*
 * The compare half of the compare-and-set: the entry still has the pass
 * where it was read (or still lacks it), in both arrays.
 */

static void
ngx_http_bytemark_mongo_ingest_filter(bson_t *filter,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p,
    ngx_http_bytemark_mongo_place_t *at)
{
    char         path[48];
    bson_t       cond;
    const char  *array, *other;

    array = (p->version == 4) ? "passes4" : "passes";
    other = (p->version == 4) ? "passes" : "passes4";

    bson_init(filter);
    BSON_APPEND_INT64(filter, "user_id", (int64_t) call->user_id);

    if (at->index >= 0) {
        snprintf(path, sizeof(path), "%s.%" PRId64 ".pass_uuid", array,
                 at->index);
        bson_append_utf8(filter, path, -1, (const char *) p->uuid,
                         NGX_HTTP_BYTEMARK_UUID_LEN);

    } else {
        snprintf(path, sizeof(path), "%s.pass_uuid", array);
        BSON_APPEND_DOCUMENT_BEGIN(filter, path, &cond);
        bson_append_utf8(&cond, "$ne", 3, (const char *) p->uuid,
                         NGX_HTTP_BYTEMARK_UUID_LEN);
        bson_append_document_end(filter, &cond);
    }

    if (at->other_index >= 0) {
        snprintf(path, sizeof(path), "%s.%" PRId64 ".pass_uuid", other,
                 at->other_index);
        bson_append_utf8(filter, path, -1, (const char *) p->uuid,
                         NGX_HTTP_BYTEMARK_UUID_LEN);
    }
}


static bson_t *
ngx_http_bytemark_mongo_ingest_update(ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_ingest_pass_t *p, const char *server_time,
    ngx_http_bytemark_mongo_place_t *at)
{
    char         key[48];
    bson_t      *u, doc, log, data;
    const char  *array, *other;

    array = (p->version == 4) ? "passes4" : "passes";
    other = (p->version == 4) ? "passes" : "passes4";

    u = bson_new();

    if (at->index < 0) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &doc);

        if (ngx_http_bytemark_json_to_bson(&doc, array, p->object, 0)
            != NGX_OK)
        {
            bson_destroy(u);
            return NULL;
        }

    } else {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &doc);
        snprintf(key, sizeof(key), "%s.%" PRId64, array, at->index);

        if (ngx_http_bytemark_json_to_bson(&doc, key, p->object, 0)
            != NGX_OK)
        {
            bson_destroy(u);
            return NULL;
        }

        bson_append_document_end(u, &doc);
        BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &doc);
    }

    /* {server_time, data: {op, pass_uuid, status}} in passesLog/passes4Log */
    snprintf(key, sizeof(key), "%sLog", array);
    BSON_APPEND_DOCUMENT_BEGIN(&doc, key, &log);
    BSON_APPEND_UTF8(&log, "server_time", server_time);
    BSON_APPEND_DOCUMENT_BEGIN(&log, "data", &data);
    BSON_APPEND_UTF8(&data, "op", "upsert");
    bson_append_utf8(&data, "pass_uuid", -1, (const char *) p->uuid,
                     NGX_HTTP_BYTEMARK_UUID_LEN);
    BSON_APPEND_UTF8(&data, "status", p->status);
    bson_append_document_end(&log, &data);
    bson_append_document_end(&doc, &log);
    bson_append_document_end(u, &doc);

    if (at->other != NULL) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$pull", &doc);
        BSON_APPEND_DOCUMENT(&doc, other, at->other);
        bson_append_document_end(u, &doc);
    }

    BSON_APPEND_DOCUMENT_BEGIN(u, "$max", &doc);
    BSON_APPEND_INT64(&doc, "timestamp", call->answer.timestamp);
    bson_append_document_end(u, &doc);

    if (at->index < 0) {
        BSON_APPEND_DOCUMENT_BEGIN(u, "$setOnInsert", &doc);
        BSON_APPEND_BOOL(&doc, "bytemark_incomplete", true);
        bson_append_document_end(u, &doc);
    }

    return u;
}
