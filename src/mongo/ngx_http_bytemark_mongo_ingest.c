
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The cache side of an ingest, in a pool thread: the passes the MySQL
 * commit wrote are put into the user's cache entry without rewriting the
 * rest (SPEC 3.3 step 2), a whole batch at a time, never by a blind
 * read-modify-write:
 *
 *   1. read where the batch's passes are (only the pass_uuid fields of both
 *      arrays: one find for the batch);
 *   2. the passes that are there, at index i of their array, are replaced
 *      there, all in one update whose filter matches only while each
 *      element i still holds its pass (a compare-and-set);
 *   3. the others are appended ($push $each), all in one update, upserting
 *      the entry, with a filter that matches only while both arrays still
 *      lack them; a new entry is marked bytemark_incomplete, since it
 *      holds only these passes.  Another ingest that appends one of them
 *      first makes the upsert hit the unique index.
 *
 * A write whose filter no longer matches (the entry changed since the read)
 * sends the passes it did not place back to 1.  A 100-pass batch costs two
 * round trips, three with replacements, instead of two per pass.
 *
 * A pass that changed version is pulled from the other array with
 * $pullAll of the element as stored: an exact comparison, where $pull
 * would take the element as a query, and operators in a client's payload
 * ("$gt", "$exists") would decide what it matches.  FerretDB 1.24 has
 * neither the positional "$", nor arrayFilters, nor a $pull condition, and
 * its $ne and $nin through an array of documents match documents that hold
 * the value: the filters here use only what it gets right (equality by
 * index, $in under $nor).  Each write appends its passes' log entries and
 * raises the entry's timestamp to the commit time ($max).
 */


#include "ngx_http_bytemark_mongo_private.h"


#define NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS  4


const char  *ngx_http_bytemark_mongo_arrays[2] = { "passes", "passes4" };


static ngx_int_t ngx_http_bytemark_mongo_plan(
    ngx_http_bytemark_mongo_plan_t *plan);
static int ngx_http_bytemark_mongo_pass_cmp(const void *a, const void *b);
static int ngx_http_bytemark_mongo_place_cmp(const void *a, const void *b);
static ngx_int_t ngx_http_bytemark_mongo_ingest_attempt(
    ngx_http_bytemark_mongo_plan_t *plan);
static ngx_int_t ngx_http_bytemark_mongo_ingest_locate(
    ngx_http_bytemark_mongo_plan_t *plan);
static ngx_int_t ngx_http_bytemark_mongo_ingest_elements(
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t *need);
static ngx_int_t ngx_http_bytemark_mongo_ingest_read(
    ngx_http_bytemark_mongo_plan_t *plan, const bson_t *opts, bson_t **doc);
static void ngx_http_bytemark_mongo_ingest_scan(
    ngx_http_bytemark_mongo_plan_t *plan, const bson_t *doc, ngx_uint_t k,
    ngx_uint_t copy);
static void ngx_http_bytemark_mongo_plan_reset(
    ngx_http_bytemark_mongo_plan_t *plan);


void
ngx_http_bytemark_mongo_ingest(ngx_http_bytemark_call_t *call)
{
    char                              server_time[NGX_HTTP_BYTEMARK_ISO_LEN];
    ngx_int_t                         rc;
    ngx_uint_t                        attempt;
    bson_error_t                      error;
    mongoc_client_t                  *client;
    ngx_http_bytemark_mongo_t        *mongo;
    ngx_http_bytemark_mongo_plan_t    plan;
    ngx_http_bytemark_call_ingest_t  *ingest;

    mongo = call->bmcf->mongo;
    ingest = ngx_http_bytemark_call_ingest(call);

    ngx_http_bytemark_iso_time(ingest->timestamp, server_time);

    ngx_memzero(&plan, sizeof(ngx_http_bytemark_mongo_plan_t));
    plan.call = call;
    plan.ingest = ingest;
    plan.server_time = server_time;

    if (ngx_http_bytemark_mongo_plan(&plan) != NGX_OK) {
        ingest->cache_failed = 1;
        snprintf(ingest->cache_error, sizeof(ingest->cache_error),
                 "no memory for the cache update of %u passes",
                 (unsigned) ingest->npasses);
        return;
    }

    plan.coll = ngx_http_bytemark_mongo_acquire(mongo, &client, call->timeout,
                                                &error);
    if (plan.coll == NULL) {
        free(plan.places);
        ingest->cache_failed = 1;
        ngx_http_bytemark_mongo_cause(ingest->cache_error,
                                      sizeof(ingest->cache_error), &error);
        return;
    }

    rc = NGX_AGAIN;

    for (attempt = 0; attempt < NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS; attempt++) {

        rc = ngx_http_bytemark_mongo_ingest_attempt(&plan);

        ngx_http_bytemark_mongo_plan_reset(&plan);

        if (rc != NGX_AGAIN) {
            break;
        }
    }

    ngx_http_bytemark_mongo_release(mongo, client, plan.coll);

    free(plan.places);

    if (rc == NGX_AGAIN) {
        snprintf(ingest->cache_error, sizeof(ingest->cache_error),
                 "concurrent writes kept the update of the entry from "
                 "applying");
    }

    if (rc != NGX_OK) {
        ingest->cache_failed = 1;
    }
}


/* thread: one place per uuid, for its last pass in the batch */

static ngx_int_t
ngx_http_bytemark_mongo_plan(ngx_http_bytemark_mongo_plan_t *plan)
{
    ngx_uint_t                        i, n;
    ngx_http_bytemark_ingest_pass_t **sorted;
    ngx_http_bytemark_mongo_place_t  *pl;
    ngx_http_bytemark_call_ingest_t  *ingest;

    ingest = plan->ingest;
    n = ingest->npasses;

    sorted = malloc(n * sizeof(ngx_http_bytemark_ingest_pass_t *));
    plan->places = calloc(n, sizeof(ngx_http_bytemark_mongo_place_t));

    if (sorted == NULL || plan->places == NULL) {
        free(sorted);
        free(plan->places);
        plan->places = NULL;
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        sorted[i] = &ingest->passes[i];
    }

    /* by uuid, then by position: a uuid's passes next to each other */
    qsort(sorted, n, sizeof(ngx_http_bytemark_ingest_pass_t *),
          ngx_http_bytemark_mongo_pass_cmp);

    for (i = 0; i < n; i++) {
        if (i > 0 && ngx_memcmp(sorted[i]->uuid, sorted[i - 1]->uuid,
                                NGX_HTTP_BYTEMARK_UUID_LEN) == 0)
        {
            /* the same pass again: its later state is the one to store */
            plan->places[plan->nplaces - 1].pass = sorted[i];
            continue;
        }

        pl = &plan->places[plan->nplaces++];
        pl->pass = sorted[i];
        pl->first = sorted[i] - ingest->passes;
    }

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];
        pl->own = (pl->pass->version == 4) ? 1 : 0;
    }

    free(sorted);

    return NGX_OK;
}


static int
ngx_http_bytemark_mongo_pass_cmp(const void *a, const void *b)
{
    int                               rc;
    ngx_http_bytemark_ingest_pass_t  *x, *y;

    x = *(ngx_http_bytemark_ingest_pass_t **) a;
    y = *(ngx_http_bytemark_ingest_pass_t **) b;

    rc = ngx_memcmp(x->uuid, y->uuid, NGX_HTTP_BYTEMARK_UUID_LEN);

    if (rc != 0) {
        return rc;
    }

    return (x > y) - (x < y);
}


static int
ngx_http_bytemark_mongo_place_cmp(const void *a, const void *b)
{
    const ngx_http_bytemark_mongo_place_t  *pl = b;

    return ngx_memcmp(a, pl->pass->uuid, NGX_HTTP_BYTEMARK_UUID_LEN);
}


ngx_http_bytemark_mongo_place_t *
ngx_http_bytemark_mongo_place(ngx_http_bytemark_mongo_plan_t *plan,
    const u_char *uuid)
{
    return bsearch(uuid, plan->places, plan->nplaces,
                   sizeof(ngx_http_bytemark_mongo_place_t),
                   ngx_http_bytemark_mongo_place_cmp);
}


/*
 * thread: read, replace, append.  NGX_OK: every pass is in place;
 * NGX_AGAIN: the entry changed under a write, read it again.  Appends and
 * pulls go in one write unless a pass changes version: a write may not
 * both push to and pull from one array.
 */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_attempt(ngx_http_bytemark_mongo_plan_t *plan)
{
    ngx_int_t   rc;
    ngx_uint_t  i, pulls;

    rc = ngx_http_bytemark_mongo_ingest_locate(plan);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_bytemark_mongo_ingest_write(plan, NGX_HTTP_BYTEMARK_WRITE_SET,
                                              NGX_HTTP_BYTEMARK_BOTH);
    if (rc != NGX_OK && rc != NGX_DECLINED) {
        return rc;
    }

    for (pulls = 0, i = 0; i < plan->nplaces; i++) {
        pulls |= !plan->places[i].cleared;
    }

    if (!pulls) {
        rc = ngx_http_bytemark_mongo_ingest_write(plan,
                                                  NGX_HTTP_BYTEMARK_WRITE_PUSH,
                                                  NGX_HTTP_BYTEMARK_BOTH);
        return (rc == NGX_DECLINED) ? NGX_OK : rc;
    }

    for (i = 0; i < 2; i++) {
        rc = ngx_http_bytemark_mongo_ingest_write(plan,
                                                  NGX_HTTP_BYTEMARK_WRITE_PUSH,
                                                  i);
        if (rc != NGX_OK && rc != NGX_DECLINED) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * thread: where the passes not yet in place are.  The first read takes only
 * the pass_uuid fields of both arrays; only passes that changed version
 * (found in the other array) cost a second read, of that array, for the
 * elements as they are stored.
 */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_locate(ngx_http_bytemark_mongo_plan_t *plan)
{
    bson_t                            opts, proj, *doc;
    ngx_int_t                         rc;
    ngx_uint_t                        i, need[2];
    ngx_http_bytemark_mongo_place_t  *pl;

    for (i = 0; i < plan->nplaces; i++) {
        plan->places[i].at[0] = -1;
        plan->places[i].at[1] = -1;
    }

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    BSON_APPEND_INT32(&proj, "passes.pass_uuid", 1);
    BSON_APPEND_INT32(&proj, "passes4.pass_uuid", 1);
    bson_append_document_end(&opts, &proj);

    rc = ngx_http_bytemark_mongo_ingest_read(plan, &opts, &doc);

    bson_destroy(&opts);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    plan->exists = (doc != NULL);

    if (doc != NULL) {
        ngx_http_bytemark_mongo_ingest_scan(plan, doc, 0, 0);
        ngx_http_bytemark_mongo_ingest_scan(plan, doc, 1, 0);
        bson_destroy(doc);
    }

    need[0] = 0;
    need[1] = 0;

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];

        /* absent now (the writes check it), or pulled by this ingest */
        pl->cleared = (pl->at[!pl->own] < 0);

        if (!pl->cleared) {
            need[!pl->own] = 1;
        }
    }

    if (!need[0] && !need[1]) {
        return NGX_OK;
    }

    return ngx_http_bytemark_mongo_ingest_elements(plan, need);
}


/* thread: the elements to pull, read whole; NGX_AGAIN if they moved */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_elements(ngx_http_bytemark_mongo_plan_t *plan,
    ngx_uint_t *need)
{
    bson_t                            opts, proj, *doc;
    ngx_int_t                         rc;
    ngx_uint_t                        i, k;
    ngx_http_bytemark_mongo_place_t  *pl;

    bson_init(&opts);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);

    for (k = 0; k < 2; k++) {
        if (need[k]) {
            BSON_APPEND_INT32(&proj, ngx_http_bytemark_mongo_arrays[k], 1);
        }
    }

    bson_append_document_end(&opts, &proj);

    rc = ngx_http_bytemark_mongo_ingest_read(plan, &opts, &doc);

    bson_destroy(&opts);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    if (doc == NULL) {
        /* deleted since the first read */
        return NGX_AGAIN;
    }

    for (k = 0; k < 2; k++) {
        if (need[k]) {
            ngx_http_bytemark_mongo_ingest_scan(plan, doc, k, 1);
        }
    }

    bson_destroy(doc);

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];

        if (!pl->cleared && pl->element == NULL) {
            /* gone or moved since the first read */
            return NGX_AGAIN;
        }
    }

    return NGX_OK;
}


/* thread: the user's entry through the projection in opts, or NULL */

static ngx_int_t
ngx_http_bytemark_mongo_ingest_read(ngx_http_bytemark_mongo_plan_t *plan,
    const bson_t *opts, bson_t **doc)
{
    bson_t                     filter;
    bson_error_t               error;
    const bson_t              *found;
    mongoc_cursor_t           *cursor;
    ngx_http_bytemark_call_t  *call;

    call = plan->call;
    *doc = NULL;

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);

    cursor = mongoc_collection_find_with_opts(plan->coll, &filter, opts,
                                              NULL);

    if (mongoc_cursor_next(cursor, &found)) {
        *doc = bson_copy(found);

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_bytemark_mongo_cause(plan->ingest->cache_error,
                                      sizeof(plan->ingest->cache_error),
                                      &error);
        mongoc_cursor_destroy(cursor);
        bson_destroy(&filter);
        return NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);

    return NGX_OK;
}


/*
 * thread: the batch's passes in array k of doc, one pass of the array.  The
 * first element with a uuid is where that pass is.  With copy, the elements
 * to pull that are still where the first read saw them are kept.
 */

static void
ngx_http_bytemark_mongo_ingest_scan(ngx_http_bytemark_mongo_plan_t *plan,
    const bson_t *doc, ngx_uint_t k, ngx_uint_t copy)
{
    int64_t                           i;
    uint32_t                          len;
    bson_iter_t                       it, e, field;
    const char                       *s;
    const uint8_t                    *data;
    ngx_http_bytemark_mongo_place_t  *pl;

    if (!bson_iter_init_find(&it, doc, ngx_http_bytemark_mongo_arrays[k])
        || !BSON_ITER_HOLDS_ARRAY(&it)
        || !bson_iter_recurse(&it, &e))
    {
        return;
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

        if (len != NGX_HTTP_BYTEMARK_UUID_LEN) {
            continue;
        }

        pl = ngx_http_bytemark_mongo_place(plan, (const u_char *) s);

        if (pl == NULL) {
            continue;
        }

        if (!copy) {
            if (pl->at[k] < 0) {
                pl->at[k] = i;
            }

            continue;
        }

        if (k != pl->own && !pl->cleared && pl->at[k] == i
            && pl->element == NULL)
        {
            bson_iter_document(&e, &len, &data);
            pl->element = bson_new_from_data(data, len);
        }
    }
}


/* thread: after an attempt, the elements read for it go */

static void
ngx_http_bytemark_mongo_plan_reset(ngx_http_bytemark_mongo_plan_t *plan)
{
    ngx_uint_t  i;

    for (i = 0; i < plan->nplaces; i++) {
        if (plan->places[i].element) {
            bson_destroy(plan->places[i].element);
            plan->places[i].element = NULL;
        }
    }
}
