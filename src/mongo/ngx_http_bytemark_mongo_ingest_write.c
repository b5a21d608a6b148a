
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The writes of an ingest's cache update (the plan and the reads are
 * ngx_http_bytemark_mongo_ingest.c): one update for the passes it selects,
 * with a filter that matches only while the entry still is as it was read
 * for them.
 */


#include "ngx_http_bytemark_mongo_private.h"


static ngx_uint_t ngx_http_bytemark_mongo_select(
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind, ngx_uint_t target);
static void ngx_http_bytemark_mongo_write_filter(bson_t *filter,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind);
static void ngx_http_bytemark_mongo_absent(bson_t *filter,
    ngx_http_bytemark_mongo_plan_t *plan);
static bson_t *ngx_http_bytemark_mongo_write_update(
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind);
static ngx_int_t ngx_http_bytemark_mongo_write_set(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan);
static ngx_int_t ngx_http_bytemark_mongo_write_push(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind);
static void ngx_http_bytemark_mongo_write_logs(bson_t *push,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t k);
static void ngx_http_bytemark_mongo_write_pulls(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan);


/*
 * thread: NGX_OK, written; NGX_DECLINED, nothing to write; NGX_AGAIN, the
 * filter matched nothing (or the upsert met the unique index): the entry
 * changed since it was read.
 */

ngx_int_t
ngx_http_bytemark_mongo_ingest_write(ngx_http_bytemark_mongo_plan_t *plan,
    ngx_uint_t kind, ngx_uint_t target)
{
    bool                              ok;
    bson_t                            filter, reply, *update;
    int64_t                           matched;
    bson_iter_t                       it;
    ngx_uint_t                        i;
    const bson_t                     *opts;
    bson_error_t                      error;
    ngx_http_bytemark_call_ingest_t  *ingest;
    ngx_http_bytemark_mongo_place_t  *pl;

    ingest = plan->ingest;

    if (ngx_http_bytemark_mongo_select(plan, kind, target) == 0) {
        return NGX_DECLINED;
    }

    update = ngx_http_bytemark_mongo_write_update(plan, kind);
    if (update == NULL) {
        snprintf(ingest->cache_error, sizeof(ingest->cache_error),
                 "a pass cannot be converted to BSON");
        return NGX_ERROR;
    }

    ngx_http_bytemark_mongo_write_filter(&filter, plan, kind);

    opts = (kind == NGX_HTTP_BYTEMARK_WRITE_PUSH && !plan->exists)
           ? ngx_http_bytemark_mongo_upsert_opts
           : ngx_http_bytemark_mongo_write_opts;

    ok = mongoc_collection_update_one(plan->coll, &filter, update, opts,
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

    if (ok && matched) {
        for (i = 0; i < plan->nplaces; i++) {
            pl = &plan->places[i];
            pl->placed |= pl->put;
            pl->cleared |= pl->pull;
        }

        return NGX_OK;
    }

    if (!ok && error.code != MONGOC_ERROR_DUPLICATE_KEY) {
        ngx_http_bytemark_mongo_cause(ingest->cache_error,
                                      sizeof(ingest->cache_error), &error);
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/*
 * The passes of this write: replacements (SET), or appends and the pulls
 * of passes that changed version (PUSH) into target's array, or both.
 */

static ngx_uint_t
ngx_http_bytemark_mongo_select(ngx_http_bytemark_mongo_plan_t *plan,
    ngx_uint_t kind, ngx_uint_t target)
{
    ngx_uint_t                        i, n;
    ngx_http_bytemark_mongo_place_t  *pl;

    n = 0;

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];
        pl->put = 0;
        pl->pull = 0;

        if (target != NGX_HTTP_BYTEMARK_BOTH && pl->own != target) {
            continue;
        }

        if (kind == NGX_HTTP_BYTEMARK_WRITE_SET) {
            pl->put = (!pl->placed && pl->at[pl->own] >= 0);

        } else {
            pl->put = (!pl->placed && pl->at[pl->own] < 0);
            pl->pull = !pl->cleared;
        }

        n += pl->put + pl->pull;
    }

    return n;
}


/*
 * The compare half of the compare-and-set: each replaced or pulled pass is
 * still at the index it was read at; the appended ones are in neither
 * array (but where they are pulled from).
 */

static void
ngx_http_bytemark_mongo_write_filter(bson_t *filter,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind)
{
    char                              path[48];
    ngx_uint_t                        i, k;
    ngx_http_bytemark_mongo_place_t  *pl;

    bson_init(filter);
    BSON_APPEND_INT64(filter, "user_id", (int64_t) plan->call->user_id);

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];

        if (kind == NGX_HTTP_BYTEMARK_WRITE_SET && pl->put) {
            k = pl->own;

        } else if (pl->pull) {
            k = !pl->own;

        } else {
            continue;
        }

        snprintf(path, sizeof(path), "%s.%" PRId64 ".pass_uuid",
                 ngx_http_bytemark_mongo_arrays[k], pl->at[k]);
        bson_append_utf8(filter, path, -1, (const char *) pl->pass->uuid,
                         NGX_HTTP_BYTEMARK_UUID_LEN);
    }

    if (kind == NGX_HTTP_BYTEMARK_WRITE_PUSH) {
        ngx_http_bytemark_mongo_absent(filter, plan);
    }
}


/*
 * {$nor: [{"passes.pass_uuid": {$in: [...]}}, {"passes4...": ...}]}: $ne
 * and $nin through an array of documents match wrongly on FerretDB 1.24.
 */

static void
ngx_http_bytemark_mongo_absent(bson_t *filter,
    ngx_http_bytemark_mongo_plan_t *plan)
{
    char                              key[16], path[24];
    bson_t                            nor, clause, cond, in;
    const char                       *idx;
    ngx_uint_t                        i, k, n, clauses;
    ngx_http_bytemark_mongo_place_t  *pl;

    clauses = 0;

    for (k = 0; k < 2; k++) {

        for (n = 0, i = 0; i < plan->nplaces; i++) {
            n += (plan->places[i].put && plan->places[i].at[k] < 0);
        }

        if (n == 0) {
            continue;
        }

        if (clauses == 0) {
            BSON_APPEND_ARRAY_BEGIN(filter, "$nor", &nor);
        }

        bson_uint32_to_string((uint32_t) clauses++, &idx, key, sizeof(key));
        BSON_APPEND_DOCUMENT_BEGIN(&nor, idx, &clause);

        snprintf(path, sizeof(path), "%s.pass_uuid",
                 ngx_http_bytemark_mongo_arrays[k]);
        BSON_APPEND_DOCUMENT_BEGIN(&clause, path, &cond);
        BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &in);

        for (n = 0, i = 0; i < plan->nplaces; i++) {
            pl = &plan->places[i];

            if (pl->put && pl->at[k] < 0) {
                bson_uint32_to_string((uint32_t) n++, &idx, key, sizeof(key));
                bson_append_utf8(&in, idx, -1, (const char *) pl->pass->uuid,
                                 NGX_HTTP_BYTEMARK_UUID_LEN);
            }
        }

        bson_append_array_end(&cond, &in);
        bson_append_document_end(&clause, &cond);
        bson_append_document_end(&nor, &clause);
    }

    if (clauses) {
        bson_append_array_end(filter, &nor);
    }
}


static bson_t *
ngx_http_bytemark_mongo_write_update(ngx_http_bytemark_mongo_plan_t *plan,
    ngx_uint_t kind)
{
    bson_t  *u, doc;

    u = bson_new();

    if (kind == NGX_HTTP_BYTEMARK_WRITE_SET
        && ngx_http_bytemark_mongo_write_set(u, plan) != NGX_OK)
    {
        bson_destroy(u);
        return NULL;
    }

    if (ngx_http_bytemark_mongo_write_push(u, plan, kind) != NGX_OK) {
        bson_destroy(u);
        return NULL;
    }

    if (kind == NGX_HTTP_BYTEMARK_WRITE_PUSH) {
        ngx_http_bytemark_mongo_write_pulls(u, plan);
    }

    BSON_APPEND_DOCUMENT_BEGIN(u, "$max", &doc);
    BSON_APPEND_INT64(&doc, "timestamp", plan->ingest->timestamp);
    bson_append_document_end(u, &doc);

    if (kind == NGX_HTTP_BYTEMARK_WRITE_PUSH && !plan->exists) {
        /* a new entry holds only these passes */
        BSON_APPEND_DOCUMENT_BEGIN(u, "$setOnInsert", &doc);
        BSON_APPEND_BOOL(&doc, "bytemark_incomplete", true);
        bson_append_document_end(u, &doc);
    }

    return u;
}


/* {$set: {"passes.<i>": pass, ...}} */

static ngx_int_t
ngx_http_bytemark_mongo_write_set(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan)
{
    char                              key[48];
    bson_t                            doc;
    ngx_uint_t                        i;
    ngx_http_bytemark_mongo_place_t  *pl;

    BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &doc);

    for (i = 0; i < plan->nplaces; i++) {
        pl = &plan->places[i];

        if (!pl->put) {
            continue;
        }

        snprintf(key, sizeof(key), "%s.%" PRId64,
                 ngx_http_bytemark_mongo_arrays[pl->own], pl->at[pl->own]);

        if (ngx_http_bytemark_json_to_bson(&doc, key, pl->pass->object, 0)
            != NGX_OK)
        {
            /* a child may be left open: u can only be destroyed */
            return NGX_ERROR;
        }
    }

    bson_append_document_end(u, &doc);

    return NGX_OK;
}


/*
 * {$push: {passes: {$each: [...]}, passesLog: {$each: [...]}, ...}}: the
 * appended passes in the order the batch first named them, and a log entry
 * for each pass of the batch this write places, in the batch's order.
 */

static ngx_int_t
ngx_http_bytemark_mongo_write_push(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t kind)
{
    char                              key[16];
    bson_t                            push, field, each;
    uint32_t                          n;
    ngx_uint_t                        i, k, any;
    const char                       *idx;
    ngx_http_bytemark_call_ingest_t  *ingest;
    ngx_http_bytemark_mongo_place_t  *pl;

    ingest = plan->ingest;

    for (any = 0, i = 0; i < plan->nplaces; i++) {
        any |= plan->places[i].put;
    }

    if (!any) {
        /* pulls only: their passes were placed and logged before */
        return NGX_OK;
    }

    BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &push);

    for (k = 0; kind == NGX_HTTP_BYTEMARK_WRITE_PUSH && k < 2; k++) {

        for (n = 0, i = 0; i < ingest->npasses; i++) {
            pl = ngx_http_bytemark_mongo_place(plan, ingest->passes[i].uuid);

            if (!pl->put || pl->own != k || pl->first != i) {
                continue;
            }

            if (n == 0) {
                BSON_APPEND_DOCUMENT_BEGIN(&push,
                                           ngx_http_bytemark_mongo_arrays[k],
                                           &field);
                BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
            }

            bson_uint32_to_string(n++, &idx, key, sizeof(key));

            if (ngx_http_bytemark_json_to_bson(&each, idx, pl->pass->object,
                                               0)
                != NGX_OK)
            {
                /* a child may be left open: u can only be destroyed */
                return NGX_ERROR;
            }
        }

        if (n) {
            bson_append_array_end(&field, &each);
            bson_append_document_end(&push, &field);
        }
    }

    ngx_http_bytemark_mongo_write_logs(&push, plan, 0);
    ngx_http_bytemark_mongo_write_logs(&push, plan, 1);

    bson_append_document_end(u, &push);

    return NGX_OK;
}


/* {server_time, data: {op, pass_uuid, status}} in passesLog/passes4Log */

static void
ngx_http_bytemark_mongo_write_logs(bson_t *push,
    ngx_http_bytemark_mongo_plan_t *plan, ngx_uint_t k)
{
    char                              key[16], name[16];
    bson_t                            field, each, log, data;
    uint32_t                          n;
    ngx_uint_t                        i;
    const char                       *idx;
    ngx_http_bytemark_call_ingest_t  *ingest;
    ngx_http_bytemark_ingest_pass_t  *p;
    ngx_http_bytemark_mongo_place_t  *pl;

    ingest = plan->ingest;

    for (n = 0, i = 0; i < ingest->npasses; i++) {
        p = &ingest->passes[i];
        pl = ngx_http_bytemark_mongo_place(plan, p->uuid);

        if (!pl->put || (p->version == 4) != k) {
            continue;
        }

        if (n == 0) {
            snprintf(name, sizeof(name), "%sLog",
                     ngx_http_bytemark_mongo_arrays[k]);
            BSON_APPEND_DOCUMENT_BEGIN(push, name, &field);
            BSON_APPEND_ARRAY_BEGIN(&field, "$each", &each);
        }

        bson_uint32_to_string(n++, &idx, key, sizeof(key));
        BSON_APPEND_DOCUMENT_BEGIN(&each, idx, &log);
        BSON_APPEND_UTF8(&log, "server_time", plan->server_time);
        BSON_APPEND_DOCUMENT_BEGIN(&log, "data", &data);
        BSON_APPEND_UTF8(&data, "op", "upsert");
        bson_append_utf8(&data, "pass_uuid", -1, (const char *) p->uuid,
                         NGX_HTTP_BYTEMARK_UUID_LEN);
        BSON_APPEND_UTF8(&data, "status", p->status);
        bson_append_document_end(&log, &data);
        bson_append_document_end(&each, &log);
    }

    if (n) {
        bson_append_array_end(&field, &each);
        bson_append_document_end(push, &field);
    }
}


/*
 * {$pullAll: {passes4: [element, ...]}}: elements equal to the ones read,
 * compared as values.  $pull would take each as a query, so that operators
 * in a client's payload would decide what it removes.
 */

static void
ngx_http_bytemark_mongo_write_pulls(bson_t *u,
    ngx_http_bytemark_mongo_plan_t *plan)
{
    char                              key[16];
    bson_t                            pull, list;
    uint32_t                          n;
    ngx_uint_t                        i, k, open;
    const char                       *idx;
    ngx_http_bytemark_mongo_place_t  *pl;

    open = 0;

    for (k = 0; k < 2; k++) {

        for (n = 0, i = 0; i < plan->nplaces; i++) {
            pl = &plan->places[i];

            if (!pl->pull || pl->own == k) {
                continue;
            }

            if (!open++) {
                BSON_APPEND_DOCUMENT_BEGIN(u, "$pullAll", &pull);
            }

            if (n == 0) {
                BSON_APPEND_ARRAY_BEGIN(&pull,
                                        ngx_http_bytemark_mongo_arrays[k],
                                        &list);
            }

            bson_uint32_to_string(n++, &idx, key, sizeof(key));
            BSON_APPEND_DOCUMENT(&list, idx, pl->element);
        }

        if (n) {
            bson_append_array_end(&pull, &list);
        }
    }

    if (open) {
        bson_append_document_end(u, &pull);
    }
}
