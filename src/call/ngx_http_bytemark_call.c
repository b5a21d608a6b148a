
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The backend-call layer.
 *
 * A MongoDB call runs one blocking driver operation on an nginx thread
 * pool; a MySQL call runs on the event loop (src/mysql/), first waiting for
 * a connection of its server (only the connect of a TLS server goes to the
 * pool, as a task of that connection: ngx_http_bytemark_call_thread_task).  The time budget is a timer on the event
 * loop, so a request never waits longer than its budget whatever the
 * driver does.  When the budget fires first, or
 * the client goes away, the call is abandoned: the request forgets it and
 * goes on, and the call (allocated outside the request pool) lives until the
 * thread finishes, when the completion handler frees it.  The thread only
 * ever touches the call, never the request, and the driver connection goes
 * back to its pool inside the thread, so an abandoned call leaks nothing.
 *
 * This is why we do not hold the request with r->main->blocked as the copy
 * filter does: a blocked request cannot be answered before its task ends,
 * and the budget is the point.
 *
 * An abandoned call still holds a pool thread.  So that a server that hangs
 * cannot take every thread and starve the others (MongoDB stuck must not
 * keep the MySQL fallback from running, a hung primary must not keep reads
 * from its replica), a worker lets at most "bytemark_stuck_calls" (2)
 * abandoned calls per server run; past that, new calls to that server are
 * skipped, as if its breaker were open, until one returns.  A call counts
 * as stuck once it outlives its budget, not when its client goes away: a
 * client that gives up says nothing about the server.  Calls without a
 * request (fills, repairs, cleanups, lookup tasks) have a budget too, and
 * count the same way; every caller asks ngx_http_bytemark_call_gate()
 * before it posts a call.
 *
 * This layer knows neither backend nor handler: a call's run, done and
 * cancel are set by the layers above, each backend hands over its
 * operations (ngx_http_bytemark_call_register()), and what a request's end
 * does to its call is the flow layer's (ngx_http_bytemark_request.c).
 */


#include "ngx_http_bytemark_call_private.h"

#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


/* per worker: the backends' operations (ngx_http_bytemark_call_register) */
const ngx_http_bytemark_call_ops_t
    *ngx_http_bytemark_call_ops[NGX_HTTP_BYTEMARK_BACKENDS];


/* each operation's payload, allocated after the call */
static const size_t  ngx_http_bytemark_call_sizes[NGX_HTTP_BYTEMARK_OPS] = {
    0,
    sizeof(ngx_http_bytemark_call_lookup_t),
    sizeof(ngx_http_bytemark_call_batch_t),
    sizeof(ngx_http_bytemark_call_fill_t),
    sizeof(ngx_http_bytemark_call_delete_t),
    sizeof(ngx_http_bytemark_call_ingest_t)
};


static void ngx_http_bytemark_call_release(ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_call_thread(void *data, ngx_log_t *log);
static void ngx_http_bytemark_call_complete(ngx_event_t *ev);
static void ngx_http_bytemark_call_timeout(ngx_event_t *ev);


ngx_http_bytemark_call_t *
ngx_http_bytemark_call_create(ngx_http_request_t *r,
    ngx_http_bytemark_backend_e backend, ngx_http_bytemark_op_e op,
    const char *name, ngx_http_bytemark_call_run_pt run,
    ngx_http_bytemark_call_done_pt done, ngx_msec_t timeout)
{
    ngx_http_bytemark_call_t  *call;

    /* one block: the call, then its operation's payload */
    call = ngx_calloc(sizeof(ngx_http_bytemark_call_t)
                      + ngx_http_bytemark_call_sizes[op], ngx_cycle->log);
    if (call == NULL) {
        return NULL;
    }

    call->op = op;
    call->payload = (ngx_http_bytemark_call_sizes[op]) ? call + 1 : NULL;

    call->task.ctx = call;
    call->task.handler = ngx_http_bytemark_call_thread;
    call->task.event.data = call;
    call->task.event.handler = ngx_http_bytemark_call_complete;
    call->task.event.log = ngx_cycle->log;

    call->budget.data = call;
    call->budget.handler = ngx_http_bytemark_call_timeout;
    call->budget.log = ngx_cycle->log;

    call->request = r;
    call->run = run;
    call->done = done;
    call->name = name;
    call->backend = backend;

    /* the primary, unless the caller picks another server */
    call->slot = ngx_http_bytemark_call_ops[backend]
                 ? ngx_http_bytemark_call_ops[backend]->slot
                 : NGX_HTTP_BYTEMARK_BREAKER_MONGO;
    call->timeout = timeout;
    call->log = r ? r->connection->log : ngx_cycle->log;
    /* a request's backend is its location's; callers without one set it */
    call->bmcf = r ? ngx_http_bytemark_get_backend(r)
                   : ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                   ngx_http_bytemark_module);

    return call;
}


/*
 * Each backend hands over its operations at init_process, so that this
 * layer never includes it.
 */

void
ngx_http_bytemark_call_register(ngx_http_bytemark_backend_e backend,
    const ngx_http_bytemark_call_ops_t *ops)
{
    ngx_http_bytemark_call_ops[backend] = ops;
}


/*
 * NGX_ERROR: the backend cannot take the call now (the thread pool queue
 * is full, too many calls wait for a connection, threads are missing); the
 * caller still owns the call and answers 503 at once, never waits.
 */

ngx_int_t
ngx_http_bytemark_call_post(ngx_http_bytemark_call_t *call)
{
    const ngx_http_bytemark_call_ops_t  *ops;

    ops = ngx_http_bytemark_call_ops[call->backend];

    if (ops == NULL || ops->post(call) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "bytemark: call %p \"%s\" for user %uL posted, "
                   "budget %M ms", call, call->name, call->user_id,
                   call->timeout);

    ngx_http_bytemark_call_started(call);

    return NGX_OK;
}


/*
 * Post a call its caller has filled in; one that the backend cannot take
 * is logged at "level" (0: not logged) and freed: NGX_ERROR, it is gone.
 */

ngx_int_t
ngx_http_bytemark_call_start(ngx_http_bytemark_call_t *call, ngx_uint_t level)
{
    const char  *why;

    if (ngx_http_bytemark_call_post(call) == NGX_OK) {
        return NGX_OK;
    }

    if (level) {
        why = call->error[0] ? call->error : "its backend cannot take it";

        if (call->user_id) {
            ngx_log_error(level, call->log, 0,
                          "bytemark: %s for user %uL not started: %s",
                          call->name, call->user_id, why);

        } else {
            ngx_log_error(level, call->log, 0,
                          "bytemark: %s not started: %s", call->name, why);
        }
    }

    ngx_http_bytemark_call_free(call);

    return NGX_ERROR;
}


/* a backend whose calls block posts them to the thread pool with this */

ngx_int_t
ngx_http_bytemark_call_thread_post(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_thread_task(call->bmcf, &call->task);
}


/*
 * A task of the backend's own on its thread pool (MySQL: a TLS connect,
 * whose task is its connection's); NGX_ERROR: the queue is full, or this
 * nginx has no threads.
 */

ngx_int_t
ngx_http_bytemark_call_thread_task(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_thread_task_t *task)
{
#if (NGX_THREADS)
    if (bmcf->thread_pool == NULL || ngx_thread_task_post == NULL) {
        return NGX_ERROR;
    }

    return ngx_thread_task_post(bmcf->thread_pool, task);
#else
    return NGX_ERROR;
#endif
}


/*
 * The call's work has begun, on a thread or on the event loop: from now on
 * it ends with ngx_http_bytemark_call_finish(), and its request waits for
 * it no longer than its budget.
 */

void
ngx_http_bytemark_call_started(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_ctx_t  *ctx;

    call->started = ngx_current_msec;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "bytemark: call %p \"%s\" started%s", call, call->name,
                   call->request ? "" : ", no request waits");

    if (!call->member) {
        /* a MongoDB lookup is counted by the task that carries it */
        if (ngx_http_bytemark_call_obs) {
            ngx_http_bytemark_call_obs->posted(call);
        }
    }

    if (call->request) {
        ctx = ngx_http_get_module_ctx(call->request, ngx_http_bytemark_module);
        ctx->call = call;

        ngx_add_timer(&call->budget, call->timeout);

    } else if (!call->member && call->timeout) {
        /*
         * No request waits (a fill, a repair, a cleanup, a lookup task),
         * but past its budget the call is stuck all the same: it counts
         * against bytemark_stuck_calls until it returns.  The timer must
         * not keep a worker from shutting down.
         */
        call->budget.cancelable = 1;
        ngx_add_timer(&call->budget, call->timeout);
    }
}


void
ngx_http_bytemark_call_free(ngx_http_bytemark_call_t *call)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call %p \"%s\" freed", call, call->name);

    ngx_http_bytemark_call_release(call);

    ngx_free(call);
}


/* what a payload owns goes with its call */

static void
ngx_http_bytemark_call_release(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_call_fill_t    *fill;
    ngx_http_bytemark_call_lookup_t  *lookup;
    ngx_http_bytemark_call_ingest_t  *ingest;

    switch (call->op) {

    case NGX_HTTP_BYTEMARK_OP_LOOKUP:
        lookup = ngx_http_bytemark_call_lookup(call);
        ngx_http_bytemark_answer_release(&lookup->answer);
        break;

    case NGX_HTTP_BYTEMARK_OP_FILL:
        fill = ngx_http_bytemark_call_fill(call);
        ngx_http_bytemark_rows_free(&fill->rows[0]);
        ngx_http_bytemark_rows_free(&fill->rows[1]);
        break;

    case NGX_HTTP_BYTEMARK_OP_INGEST:
        ingest = ngx_http_bytemark_call_ingest(call);
        ngx_http_bytemark_ingest_passes_free(ingest->passes, ingest->npasses);
        break;

    default:
        /* a batch's array of members is mongo_batch.c's to free */
        break;
    }
}


void
ngx_http_bytemark_answer_release(ngx_http_bytemark_answer_t *a)
{
    ngx_http_bytemark_passes_free(&a->passes[0]);
    ngx_http_bytemark_passes_free(&a->passes[1]);
    ngx_http_bytemark_rows_free(&a->rows[0]);
    ngx_http_bytemark_rows_free(&a->rows[1]);
}


/* runs in a pool thread: touch nothing but the call */

static void
ngx_http_bytemark_call_thread(void *data, ngx_log_t *log)
{
    ngx_http_bytemark_call_t  *call = data;

    call->run(call);
}


static void
ngx_http_bytemark_call_complete(ngx_event_t *ev)
{
    ngx_http_bytemark_call_finish(ev->data);
}


/*
 * Event loop: the call's work is over (its thread returned, or its event
 * loop operation ended); its request, if one still waits, is answered, and
 * the call is freed.
 */

void
ngx_http_bytemark_call_finish(ngx_http_bytemark_call_t *call)
{
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_bytemark_ctx_t      *ctx;
    ngx_http_bytemark_outcome_t   o;

    call->elapsed = ngx_current_msec - call->started;

    o.result = call->result;
    o.elapsed = call->elapsed;
    o.error = call->error;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call %p \"%s\" done in %M ms, result %d%s",
                   call, call->name, call->elapsed, (int) call->result,
                   call->request ? "" : ", its request has gone");

    if (!call->member) {
        if (ngx_http_bytemark_call_obs) {
            ngx_http_bytemark_call_obs->completed(call);
        }
    }

    if (call->budget.timer_set) {
        ngx_del_timer(&call->budget);
    }

    if (call->stuck) {
        ngx_http_bytemark_call_unstuck(call);
    }

    r = call->request;

    if (r == NULL) {
        /* abandoned, or never attached (a cache fill) */

        if (call->always_done) {
            /* it has work left that does not need the request */
            ngx_http_bytemark_call_report(call, &o);
            call->done(NULL, call, &o);
            ngx_http_bytemark_call_free(call);
            return;
        }

        if (call->error[0]) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "bytemark: %s for user %uL failed: %s",
                          call->name, call->user_id, call->error);
        }

        ngx_http_bytemark_call_free(call);
        return;
    }

    call->request = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
    ctx->call = NULL;

    c = r->connection;

    ngx_http_bytemark_call_report(call, &o);
    call->done(r, call, &o);

    ngx_http_bytemark_call_free(call);

    ngx_http_run_posted_requests(c);
}


/*
 * The request has gone (its client, or its cleanup): it forgets the call.
 * A call still queued in its backend never started, and ends here; the
 * budget timer of any other stays: it tells when the call is stuck.
 */

void
ngx_http_bytemark_call_abandon(ngx_http_bytemark_call_t *call)
{
    const ngx_http_bytemark_call_ops_t  *ops;

    call->request = NULL;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call %p \"%s\" abandoned: its request has gone",
                   call, call->name);

    ops = ngx_http_bytemark_call_ops[call->backend];

    if (ops && ops->leave && ops->leave(call) == NGX_OK) {
        ngx_http_bytemark_call_finish(call);
    }
}


/* the budget is spent: answer without the call, which the thread still owns */

static void
ngx_http_bytemark_call_timeout(ngx_event_t *ev)
{
    char                          error[64];
    ngx_int_t                     rc;
    ngx_uint_t                    queued;
    ngx_connection_t             *c;
    ngx_http_request_t           *r;
    ngx_http_bytemark_ctx_t      *ctx;
    ngx_http_bytemark_call_t     *call;
    ngx_http_bytemark_outcome_t   o;

    call = ev->data;
    r = call->request;

    /*
     * A MySQL call that still waits for a connection, or a MongoDB lookup
     * that still waits for its task, leaves its queue (NGX_OK).  A lookup
     * whose task runs (NGX_DONE) has marked the task stuck instead: the
     * thread is the task's, counted once however many of its lookups
     * outlive their budgets.
     */
    rc = call->cancel ? call->cancel(call) : NGX_DECLINED;
    queued = (rc == NGX_OK);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: call %p \"%s\" timed out after %M ms, %s%s",
                   call, call->name, call->timeout,
                   queued ? "never started" : (rc == NGX_DONE)
                                             ? "its task is stuck"
                                             : "stuck",
                   r ? "" : ", no request waits");

    if (rc == NGX_DECLINED) {
        /*
         * The budget is spent: whoever waited, the call now holds a thread
         * (MongoDB) or a connection (MySQL) until its operation ends.
         */
        ngx_http_bytemark_call_stuck(call);
    }

    c = NULL;

    if (r) {
        call->request = NULL;
        if (ngx_http_bytemark_call_obs) {
            ngx_http_bytemark_call_obs->timed_out(call);
        }

        ctx = ngx_http_get_module_ctx(r, ngx_http_bytemark_module);
        ctx->call = NULL;

        c = r->connection;

        /*
         * done() reads the outcome, not the answer: the thread may still
         * be writing that.
         */

        ngx_snprintf((u_char *) error, sizeof(error),
                     "no answer within %M ms%Z", call->timeout);

        o.result = NGX_HTTP_BYTEMARK_TIMED_OUT;
        o.elapsed = ngx_current_msec - call->started;
        o.error = error;

        ngx_http_bytemark_call_report(call, &o);
        call->done(r, call, &o);
    }

    if (queued) {
        /* it never started: it ends here */
        ngx_http_bytemark_call_finish(call);
    }

    if (c) {
        ngx_http_run_posted_requests(c);
    }
}


/*
 * A content handler that posted a call holds its request until a done()
 * finalizes it, and watches for a client that goes away meanwhile.
 */

ngx_int_t
ngx_http_bytemark_call_hold(ngx_http_request_t *r)
{
    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}
