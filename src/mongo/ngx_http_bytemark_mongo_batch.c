
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MongoDB lookups: one thread task carries many.
 *
 * A lookup is a call of its own (its request, its budget timer, its
 * answer), but it is not posted to the thread pool itself.  A worker runs
 * at most NGX_HTTP_BYTEMARK_BATCH_TASKS find tasks at a time: a lookup
 * that finds fewer running is posted at once, in a task of its own, so
 * that batching adds no latency to a lone request; otherwise it waits in
 * the worker's queue (event loop only, no lock).  When a task completes,
 * the next one is posted right away with up to "bytemark_mongo_batch" of
 * the queued lookups as one find({user_id: {$in: [...]}}); each lookup
 * gets the first document of its user, as its own findOne would, and
 * lookups of the same user share one key of the find and get copies of
 * one decoded answer (each frees its own).
 *
 * A lookup that waits leaves the queue when its budget is spent (it is
 * answered as a timed-out lookup: call.c) or when its client goes away
 * (freed at once).  A lookup whose task runs is abandoned as any call is:
 * the task owns it until the thread returns, and frees it then.
 *
 * Accounting:
 *   - the thread pool gauge counts tasks, not lookups (a member skips the
 *     metrics in call.c; its task is a call); the task's completion
 *     observes its duration once per member, and its size in
 *     bytemark_mongo_batch_size (metrics.c);
 *   - a task is stuck, one thread for bytemark_stuck_calls, once one of
 *     its lookups outlives its budget;
 *   - failures stay per lookup, as before batching: each member of a
 *     failed task logs its failure, counts in bytemark_backend_errors_total
 *     and reports to the breaker through its own call, so a task of 50
 *     failed lookups weighs on the breaker as 50 concurrent lookups did.
 */


#include "ngx_http_bytemark_mongo_private.h"


/* find tasks in flight per worker; past that, lookups queue */
#define NGX_HTTP_BYTEMARK_BATCH_TASKS  2


static ngx_int_t ngx_http_bytemark_mongo_post(ngx_http_bytemark_call_t *call);
static ngx_int_t ngx_http_bytemark_mongo_leave(ngx_http_bytemark_call_t *call);
static ngx_int_t ngx_http_bytemark_batch_post(
    ngx_http_bytemark_call_t **members, ngx_uint_t n);
static void ngx_http_bytemark_batch_next(ngx_http_bytemark_mongo_t *mongo);
static void ngx_http_bytemark_batch_wakeup(ngx_event_t *ev);
static ngx_int_t ngx_http_bytemark_batch_cancel(ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_batch_run(ngx_http_bytemark_call_t *task);
static void ngx_http_bytemark_batch_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *task, ngx_http_bytemark_outcome_t *o);
static void ngx_http_bytemark_batch_found(ngx_http_bytemark_call_t **m,
    ngx_uint_t n, const bson_t *doc);
static int ngx_http_bytemark_batch_cmp(const void *a, const void *b);


static const ngx_http_bytemark_call_ops_t  ngx_http_bytemark_mongo_ops = {
    ngx_http_bytemark_mongo_post,
    ngx_http_bytemark_mongo_leave,
    NGX_HTTP_BYTEMARK_BREAKER_MONGO
};


/* per worker and backend, event loop only: each backend batches its own */

void
ngx_http_bytemark_mongo_batch_init(ngx_http_bytemark_mongo_t *mongo,
    ngx_uint_t max)
{
    ngx_http_bytemark_call_register(NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                    &ngx_http_bytemark_mongo_ops);

    ngx_queue_init(&mongo->batch_queue);
    mongo->batch_queued = 0;
    mongo->batch_running = 0;
    mongo->batch_max = max;

    ngx_memzero(&mongo->batch_wake, sizeof(ngx_event_t));
    mongo->batch_wake.handler = ngx_http_bytemark_batch_wakeup;
    mongo->batch_wake.data = mongo;
    mongo->batch_wake.log = ngx_cycle->log;
}


void
ngx_http_bytemark_mongo_batch_exit(ngx_http_bytemark_mongo_t *mongo)
{
    if (mongo->batch_wake.posted) {
        ngx_delete_posted_event(&mongo->batch_wake);
    }
}


/*
 * Event loop: MongoDB's post() (ngx_http_bytemark_call_post()).  A lookup
 * (NGX_HTTP_BYTEMARK_OP_LOOKUP) joins a task; any other call is a thread
 * task of its own.  NGX_ERROR: it could not be posted (thread pool queue
 * full); the caller still owns it.
 */

static ngx_int_t
ngx_http_bytemark_mongo_post(ngx_http_bytemark_call_t *call)
{
    ngx_int_t                   rc;
    ngx_http_bytemark_mongo_t  *mongo;

    if (call->op != NGX_HTTP_BYTEMARK_OP_LOOKUP) {
        rc = ngx_http_bytemark_call_thread_post(call);
        goto posted;
    }

    mongo = call->bmcf->mongo;
    call->member = 1;
    call->cancel = ngx_http_bytemark_batch_cancel;

    if (mongo->batch_running < NGX_HTTP_BYTEMARK_BATCH_TASKS
        && ngx_queue_empty(&mongo->batch_queue))
    {
        rc = ngx_http_bytemark_batch_post(&call, 1);

        if (rc != NGX_OK) {
            call->member = 0;
            call->cancel = NULL;
        }

        goto posted;
    }

    /* the budget runs from now (call_post() starts it): queueing is part */
    ngx_queue_insert_tail(&mongo->batch_queue, &call->queue);
    mongo->batch_queued++;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "bytemark: mongo lookup of user %uL queued, %ui waiting",
                   call->user_id, mongo->batch_queued);

    if (mongo->batch_running < NGX_HTTP_BYTEMARK_BATCH_TASKS
        && !mongo->batch_wake.posted)
    {
        /*
         * A task could not be set up before (no memory), or this lookup
         * starts from a request that a task's end just ran (a subrequest):
         * the queue runs again, but from the event loop.  A task that
         * fails to post finishes its lookups, and this one's request must
         * not be finalized under the content handler that is still
         * starting it (the handler holds the request next).
         */
        ngx_post_event(&mongo->batch_wake, &ngx_posted_events);
    }

    return NGX_OK;

posted:

    if (rc != NGX_OK) {
        ngx_cpystrn((u_char *) call->error,
                    (u_char *) "thread pool queue is full",
                    sizeof(call->error));
    }

    return rc;
}


/* posted event: the queued lookups go, now that no handler is under us */

static void
ngx_http_bytemark_batch_wakeup(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "bytemark: mongo batch wake-up");

    ngx_http_bytemark_batch_next(ev->data);
}


/* a queued lookup leaves the queue (NGX_OK); one that runs cannot */

static ngx_int_t
ngx_http_bytemark_mongo_leave(ngx_http_bytemark_call_t *call)
{
    if (!call->member || ngx_http_bytemark_call_lookup(call)->batch) {
        return NGX_DECLINED;
    }

    ngx_queue_remove(&call->queue);
    call->bmcf->mongo->batch_queued--;

    return NGX_OK;
}


/* call.c, budget spent: see ngx_http_bytemark_call_timeout() */

static ngx_int_t
ngx_http_bytemark_batch_cancel(ngx_http_bytemark_call_t *call)
{
    if (ngx_http_bytemark_mongo_leave(call) == NGX_OK) {
        return NGX_OK;
    }

    ngx_http_bytemark_call_stuck(ngx_http_bytemark_call_lookup(call)->batch);

    return NGX_DONE;
}


/* a task for these lookups, posted; NGX_ERROR leaves them to the caller */

static ngx_int_t
ngx_http_bytemark_batch_post(ngx_http_bytemark_call_t **members, ngx_uint_t n)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_call_t        *task;
    ngx_http_bytemark_mongo_t       *mongo;
    ngx_http_bytemark_call_batch_t  *batch;

    task = ngx_http_bytemark_call_create(NULL, NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                                         NGX_HTTP_BYTEMARK_OP_BATCH,
                                         "mongo find",
                                         ngx_http_bytemark_batch_run,
                                         ngx_http_bytemark_batch_done,
                                         members[0]->timeout);
    if (task == NULL) {
        return NGX_ERROR;
    }

    /* the lookups' backend: its pool, breaker and stuck calls */
    task->bmcf = members[0]->bmcf;
    mongo = task->bmcf->mongo;

    task->always_done = 1;
    batch = ngx_http_bytemark_call_batch(task);
    batch->members = ngx_alloc(n * sizeof(ngx_http_bytemark_call_t *),
                               ngx_cycle->log);
    if (batch->members == NULL) {
        ngx_http_bytemark_call_free(task);
        return NGX_ERROR;
    }

    ngx_memcpy(batch->members, members,
               n * sizeof(ngx_http_bytemark_call_t *));
    batch->nmembers = n;

    if (ngx_http_bytemark_call_post(task) != NGX_OK) {
        ngx_free(batch->members);
        ngx_http_bytemark_call_free(task);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_call_lookup(members[i])->batch = task;
    }

    mongo->batch_running++;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mongo batch task %p of %ui lookups posted, "
                   "%ui running", task, n, mongo->batch_running);

    return NGX_OK;
}


/* event loop: the queued lookups go, as many tasks as may run */

static void
ngx_http_bytemark_batch_next(ngx_http_bytemark_mongo_t *mongo)
{
    ngx_uint_t                 i, n;
    ngx_queue_t               *q;
    ngx_http_bytemark_call_t  *call, **members;

    while (mongo->batch_running < NGX_HTTP_BYTEMARK_BATCH_TASKS
           && !ngx_queue_empty(&mongo->batch_queue))
    {
        n = ngx_min(mongo->batch_queued, mongo->batch_max);

        members = ngx_alloc(n * sizeof(ngx_http_bytemark_call_t *),
                            ngx_cycle->log);
        if (members == NULL) {
            /* the queued lookups wait for the next task, or their budget */
            return;
        }

        for (i = 0; i < n; i++) {
            q = ngx_queue_head(&mongo->batch_queue);
            ngx_queue_remove(q);
            members[i] = ngx_queue_data(q, ngx_http_bytemark_call_t, queue);
        }

        mongo->batch_queued -= n;

        if (ngx_http_bytemark_batch_post(members, n) != NGX_OK) {
            /* each fails as a lookup that found no thread did */
            for (i = 0; i < n; i++) {
                call = members[i];
                call->result = NGX_HTTP_BYTEMARK_NO_THREAD;
                ngx_cpystrn((u_char *) call->error,
                            (u_char *) "not started: thread pool queue "
                            "is full", sizeof(call->error));
                ngx_http_bytemark_call_finish(call);
            }
        }

        ngx_free(members);
    }
}


/*
 * Event loop, from ngx_http_bytemark_call_finish() of the task: the next
 * task goes first, then each lookup is answered (or, abandoned, freed).
 */

static void
ngx_http_bytemark_batch_done(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *task, ngx_http_bytemark_outcome_t *o)
{
    ngx_uint_t                       i, n;
    ngx_http_bytemark_call_t       **members, *call;
    ngx_http_bytemark_mongo_t       *mongo;
    ngx_http_bytemark_call_batch_t  *batch;

    mongo = task->bmcf->mongo;
    batch = ngx_http_bytemark_call_batch(task);
    members = batch->members;
    n = batch->nmembers;
    batch->members = NULL;
    batch->nmembers = 0;

    mongo->batch_running--;
    ngx_http_bytemark_batch_next(mongo);

    for (i = 0; i < n; i++) {
        call = members[i];
        ngx_http_bytemark_call_lookup(call)->batch = NULL;

        if (call->result == NGX_HTTP_BYTEMARK_FAILED
            && !call->budget.timedout)
        {
            /* per lookup, as before batching (see the top of the file) */
            ngx_http_bytemark_metrics_backend_error(
                NGX_HTTP_BYTEMARK_BACKEND_MONGO,
                call->error_kind ? call->error_kind
                                 : NGX_HTTP_BYTEMARK_ERR_QUERY);
        }

        ngx_http_bytemark_call_finish(call);
    }

    ngx_free(members);
}


/*
 * thread: one find for the task's users.  Touches the task and its
 * members' answers and errors only; the event loop changes nothing of
 * them but a member's request and timer meanwhile.
 */

static void
ngx_http_bytemark_batch_run(ngx_http_bytemark_call_t *task)
{
    bson_t                      filter;
    uint64_t                    id;
    ngx_uint_t                  i, lo, hi, mid, n;
    const bson_t               *doc, *opts;
    bson_error_t                error;
    mongoc_client_t            *client;
    mongoc_cursor_t            *cursor;
    mongoc_collection_t        *coll;
    ngx_http_bytemark_call_t  **m;
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = task->bmcf->mongo;
    m = ngx_http_bytemark_call_batch(task)->members;
    n = ngx_http_bytemark_call_batch(task)->nmembers;

    /* lookups of one user next to each other: one key each */
    qsort(m, n, sizeof(ngx_http_bytemark_call_t *),
          ngx_http_bytemark_batch_cmp);

    for (i = 0; i < n; i++) {
        m[i]->result = NGX_HTTP_BYTEMARK_NOT_FOUND;
    }

    opts = ngx_http_bytemark_mongo_batch_filter(mongo, m, n, &filter);

    coll = ngx_http_bytemark_mongo_acquire(mongo, &client, task->timeout,
                                           &error);
    if (coll == NULL) {
        for (i = 0; i < n; i++) {
            ngx_http_bytemark_mongo_error(m[i], &error);
        }

        bson_destroy(&filter);
        return;
    }

    cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);

    while (mongoc_cursor_next(cursor, &doc)) {

        if (ngx_http_bytemark_mongo_doc_user(doc, &id) != NGX_OK) {
            /* $in matched it, yet no number: an array holding the id */
            continue;
        }

        /* the first lookup of that user */
        lo = 0;
        hi = n;

        while (lo < hi) {
            mid = lo + (hi - lo) / 2;

            if (m[mid]->user_id < id) {
                lo = mid + 1;

            } else {
                hi = mid;
            }
        }

        if (lo == n || m[lo]->user_id != id
            || m[lo]->result != NGX_HTTP_BYTEMARK_NOT_FOUND)
        {
            /* not ours, or not the first document of that user */
            continue;
        }

        for (hi = lo; hi < n && m[hi]->user_id == id; hi++) {
            /* void */
        }

        ngx_http_bytemark_batch_found(&m[lo], hi - lo, doc);
    }

    if (mongoc_cursor_error(cursor, &error)) {
        for (i = 0; i < n; i++) {
            if (m[i]->result == NGX_HTTP_BYTEMARK_NOT_FOUND) {
                ngx_http_bytemark_mongo_error(m[i], &error);
            }
        }
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    ngx_http_bytemark_mongo_release(mongo, client, coll);
}


/* thread: the document of the n lookups of one user, decoded once */

static void
ngx_http_bytemark_batch_found(ngx_http_bytemark_call_t **m, ngx_uint_t n,
    const bson_t *doc)
{
    ngx_uint_t                   i;
    ngx_http_bytemark_answer_t  *a;

    a = &ngx_http_bytemark_call_lookup(m[0])->answer;

    if (ngx_http_bytemark_entry_from_bson(doc, a, m[0]->error,
                                          sizeof(m[0]->error))
        == NGX_OK)
    {
        m[0]->result = NGX_HTTP_BYTEMARK_FOUND;

    } else {
        ngx_http_bytemark_answer_release(a);
        m[0]->result = NGX_HTTP_BYTEMARK_MALFORMED;
    }

    for (i = 1; i < n; i++) {
        ngx_memcpy(m[i]->error, m[0]->error, sizeof(m[0]->error));
        m[i]->result = m[0]->result;

        if (ngx_http_bytemark_mongo_answer_copy(
                &ngx_http_bytemark_call_lookup(m[i])->answer, a)
            != NGX_OK)
        {
            m[i]->result = NGX_HTTP_BYTEMARK_FAILED;
            m[i]->error_kind = NGX_HTTP_BYTEMARK_ERR_QUERY;
            ngx_cpystrn((u_char *) m[i]->error,
                        (u_char *) "no memory for a copy of the answer",
                        sizeof(m[i]->error));
        }
    }
}


static int
ngx_http_bytemark_batch_cmp(const void *a, const void *b)
{
    uint64_t  x, y;

    x = (*(ngx_http_bytemark_call_t **) a)->user_id;
    y = (*(ngx_http_bytemark_call_t **) b)->user_id;

    return (x > y) - (x < y);
}
