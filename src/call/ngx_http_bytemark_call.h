
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The backend-call layer: a call, its time budget on the event loop, and
 * how it ends (resumed, abandoned, stuck).  A call names its backend; the
 * backend's operations table (registered at init_process) posts it: to the
 * thread pool (MongoDB, whose lookups are batched first) or onto the event
 * loop (MySQL).  It knows neither backend nor the request's handler: they
 * are pointers (ops, run, done, cancel) set by the layers above.
 */

#ifndef _NGX_HTTP_BYTEMARK_CALL_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_CALL_H_INCLUDED_


#include "ngx_http_bytemark_render.h"


/*
 * How a call ended, as done() reads it: the call's own result, or, when
 * its budget was spent first, NGX_HTTP_BYTEMARK_TIMED_OUT while the call
 * goes on without its request.  Then done() must read of the call only
 * what the event loop owns (its name, user, budget, arguments), never the
 * answer or the error that a thread may still be writing.
 */
typedef struct {
    ngx_http_bytemark_result_e    result;
    ngx_msec_t                    elapsed;
    const char                   *error;     /* cause, for the log, or "" */
} ngx_http_bytemark_outcome_t;

typedef void (*ngx_http_bytemark_call_run_pt)(ngx_http_bytemark_call_t *call);
typedef void (*ngx_http_bytemark_call_done_pt)(ngx_http_request_t *r,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_outcome_t *o);


/*
 * The operations, each with its arguments and results in a payload of its
 * own (below), allocated with the call in one block and freed with it.
 * Payloads rather than one struct of every operation's fields, or a union
 * of them in the call: a call is as large as its own operation needs, a
 * field of another operation does not compile (the call has none, and
 * each payload is a type of its own), and the accessors check the call's
 * operation, so a wrong one is NULL at its first use instead of another
 * operation's bytes.
 */
typedef enum {
    NGX_HTTP_BYTEMARK_OP_NONE = 0,
    NGX_HTTP_BYTEMARK_OP_LOOKUP,      /* a MongoDB find, a MySQL read */
    NGX_HTTP_BYTEMARK_OP_BATCH,       /* a MongoDB task of lookups */
    NGX_HTTP_BYTEMARK_OP_FILL,        /* the cache entry from MySQL rows */
    NGX_HTTP_BYTEMARK_OP_DELETE,      /* purge, repair, cleanup */
    NGX_HTTP_BYTEMARK_OP_INGEST,      /* the transaction, its cache update */
    NGX_HTTP_BYTEMARK_OPS
} ngx_http_bytemark_op_e;


/*
 * A backend call.  It is allocated outside the request pool: the thread owns
 * it until the completion handler runs on the event loop, whatever happened
 * to the request meanwhile.
 */
struct ngx_http_bytemark_call_s {
    ngx_thread_task_t             task;
    ngx_event_t                   budget;

    ngx_http_request_t           *request;   /* NULL once abandoned */
    ngx_http_bytemark_call_run_pt run;
    ngx_http_bytemark_call_done_pt done;
    const char                   *name;      /* "mongo find", ... */
    ngx_http_bytemark_backend_e   backend;
    ngx_http_bytemark_op_e        op;
    void                         *payload;   /* op's: the accessors below */
    ngx_uint_t                    slot;      /* breaker: mongo, mysql #n */
    ngx_uint_t                    report;    /* to the breaker: REPORT_* */
    unsigned                      stuck:1;   /* abandoned, thread still busy */

    /* done() runs even when the request has gone (ingest, cleanup) */
    unsigned                      always_done:1;

    /*
     * A MongoDB lookup carried by a task (a call of its own, without a
     * request): it is neither posted nor counted by the metrics itself,
     * its task is.
     */
    unsigned                      member:1;

    /*
     * MySQL calls run on the event loop: queued for a connection of their
     * server, then driven on it; MongoDB lookups wait for a task in the
     * worker's queue.  When the budget is spent, cancel() takes a call
     * that still waits out of the queue (NGX_OK); one that runs
     * (NGX_DECLINED) finishes its statement on the loop.
     */
    ngx_queue_t                   queue;
    void                         *conn;
    ngx_int_t                   (*cancel)(ngx_http_bytemark_call_t *call);

    ngx_http_bytemark_main_conf_t *bmcf;
    ngx_log_t                    *log;
    ngx_msec_t                    started;
    int64_t                       posted_us;  /* metrics: monotonic */
    ngx_msec_t                    elapsed;
    ngx_msec_t                    timeout;

    /* whose call it is (0: nobody's), for this layer's log lines too */
    uint64_t                      user_id;

    /* the outcome, as done() and the metrics read it */
    ngx_http_bytemark_result_e    result;
    ngx_uint_t                    error_kind;  /* NGX_HTTP_BYTEMARK_ERR_* */
    char                          error[640];  /* cause, for the log */
};


/* a lookup: MongoDB's find (batched, mongo_batch.c), a MySQL read */
typedef struct {
    u_char                        uuid[NGX_HTTP_BYTEMARK_UUID_LEN];  /* pass */
    ngx_http_bytemark_answer_t    answer;
    /* MongoDB: the task that carries it, NULL while it waits in the queue */
    ngx_http_bytemark_call_t     *batch;
} ngx_http_bytemark_call_lookup_t;

/* a MongoDB task: one find for its members' users */
typedef struct {
    ngx_http_bytemark_call_t    **members;      /* ngx_alloc()ed */
    ngx_uint_t                    nmembers;
} ngx_http_bytemark_call_batch_t;

/* a cache fill: the rows of a MySQL answer, and when it read them */
typedef struct {
    int64_t                       timestamp;
    ngx_http_bytemark_rows_t      rows[2];      /* passes, passes4 */
} ngx_http_bytemark_call_fill_t;

/* a delete: a user's entry (purge, repair), or old ones (cleanup) */
typedef struct {
    int64_t                       max_age;      /* cleanup */
    int64_t                       stamp;        /* the note's, the run's */
    int64_t                       deleted;
} ngx_http_bytemark_call_delete_t;

/* an ingest: its MySQL transaction, then its cache update (a second call) */
typedef struct {
    ngx_http_bytemark_ingest_pass_t *passes;
    ngx_uint_t                    npasses;
    int64_t                       timestamp;    /* of the commit */
    int64_t                       written;
    char                          refused[128];  /* REFUSED: for the client */
    unsigned                      commit_sent:1;  /* COMMIT sent */
    unsigned                      cache_failed:1;
    char                          cache_error[640];
} ngx_http_bytemark_call_ingest_t;


static ngx_inline void *
ngx_http_bytemark_call_payload(ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_op_e op)
{
    return (call->op == op) ? call->payload : NULL;
}


static ngx_inline ngx_http_bytemark_call_lookup_t *
ngx_http_bytemark_call_lookup(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_payload(call, NGX_HTTP_BYTEMARK_OP_LOOKUP);
}


static ngx_inline ngx_http_bytemark_call_batch_t *
ngx_http_bytemark_call_batch(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_payload(call, NGX_HTTP_BYTEMARK_OP_BATCH);
}


static ngx_inline ngx_http_bytemark_call_fill_t *
ngx_http_bytemark_call_fill(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_payload(call, NGX_HTTP_BYTEMARK_OP_FILL);
}


static ngx_inline ngx_http_bytemark_call_delete_t *
ngx_http_bytemark_call_delete(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_payload(call, NGX_HTTP_BYTEMARK_OP_DELETE);
}


static ngx_inline ngx_http_bytemark_call_ingest_t *
ngx_http_bytemark_call_ingest(ngx_http_bytemark_call_t *call)
{
    return ngx_http_bytemark_call_payload(call, NGX_HTTP_BYTEMARK_OP_INGEST);
}


/*
 * What a backend does with its calls, registered at init_process
 * (ngx_http_bytemark_call_register()): post() takes the call (NGX_OK) or
 * leaves it to the caller (NGX_ERROR, with call->error set where it can
 * say why); a call it queues gets a cancel() of its own, for a spent
 * budget.  leave(), when the client goes away, takes a call that has not
 * started out of the backend's queue (NGX_OK).  Its breaker slots start at
 * "slot" (MySQL: one per server, the caller picks it).
 */
typedef ngx_int_t (*ngx_http_bytemark_call_post_pt)(
    ngx_http_bytemark_call_t *call);

typedef struct {
    ngx_http_bytemark_call_post_pt  post;
    ngx_http_bytemark_call_post_pt  leave;    /* may be NULL */
    ngx_uint_t                      slot;
} ngx_http_bytemark_call_ops_t;

/*
 * What the call layer reports (its metrics) and the breakers it asks: the
 * shm layer, above, hands these over at init_process
 * (ngx_http_bytemark_call_observe()), so that nothing below it calls into
 * it.  Without them every breaker lets calls through and nothing counts.
 */
typedef struct {
    ngx_int_t  (*breaker_allow)(ngx_http_bytemark_main_conf_t *bmcf,
                                ngx_uint_t slot);
    ngx_int_t  (*breaker_is_open)(ngx_http_bytemark_main_conf_t *bmcf,
                                  ngx_uint_t slot);
    void       (*breaker_result)(ngx_http_bytemark_main_conf_t *bmcf,
                                 ngx_uint_t slot, ngx_uint_t ok,
                                 int64_t cost);
    void       (*backend_error)(ngx_uint_t backend, ngx_uint_t kind);
    void       (*posted)(ngx_http_bytemark_call_t *call);
    void       (*timed_out)(ngx_http_bytemark_call_t *call);
    void       (*completed)(ngx_http_bytemark_call_t *call);
} ngx_http_bytemark_call_observer_t;

/*
 * The gate a call passes before it is created and posted
 * (ngx_http_bytemark_call_gate()): never past "bytemark_stuck_calls"
 * abandoned calls to its server, and, by the caller's policy, the breaker:
 */
#define NGX_HTTP_BYTEMARK_GATE_STUCK        0x00  /* stuck calls only */
#define NGX_HTTP_BYTEMARK_GATE_SKIP_OPEN    0x01  /* skip an open breaker, as
                                                     work that can wait: no
                                                     probe claimed */
#define NGX_HTTP_BYTEMARK_GATE_PROBE        0x02  /* ask the breaker: when
                                                     half open, the call may
                                                     be its probe */
#define NGX_HTTP_BYTEMARK_GATE_STUCK_FAILS  0x04  /* stuck calls are a
                                                     breaker failure */
#define NGX_HTTP_BYTEMARK_GATE_COUNT_STUCK  0x08  /* backend error
                                                     "breaker_open" ... */
#define NGX_HTTP_BYTEMARK_GATE_COUNT_OPEN   0x10  /* ... when stuck / open */
#define NGX_HTTP_BYTEMARK_GATE_NO_STUCK     0x20  /* the breaker only: the
                                                     call holds a connection
                                                     already (MySQL ingest) */

/*
 * What the call layer tells the breaker of a call's outcome, just before
 * its done() runs (call->report); a backend that knows better (the MySQL
 * side, which tells a server's failure from an SQL error) reports itself.
 */
#define NGX_HTTP_BYTEMARK_REPORT_NONE     0
#define NGX_HTTP_BYTEMARK_REPORT_FOUND    1   /* success: FOUND, else failure */
#define NGX_HTTP_BYTEMARK_REPORT_ANSWER   2   /* success: any answer; a call
                                                 that found no thread is not
                                                 reported */
#define NGX_HTTP_BYTEMARK_REPORT_TIMEOUT  3   /* a spent budget only, as a
                                                 failure */

/* the breaker's cost of a failure that is a call stuck in a thread */
#define NGX_HTTP_BYTEMARK_CALL_STUCK_COST   NGX_MAX_INT32_VALUE

/* a lookup: a request waits, and the fallback answers when it cannot go */
#define NGX_HTTP_BYTEMARK_GATE_LOOKUP                                         \
    (NGX_HTTP_BYTEMARK_GATE_PROBE | NGX_HTTP_BYTEMARK_GATE_STUCK_FAILS        \
     | NGX_HTTP_BYTEMARK_GATE_COUNT_STUCK | NGX_HTTP_BYTEMARK_GATE_COUNT_OPEN)

/* call layer */
void ngx_http_bytemark_call_observe(
    const ngx_http_bytemark_call_observer_t *observer);
ngx_int_t ngx_http_bytemark_call_gate(ngx_http_bytemark_main_conf_t *bmcf,
    ngx_uint_t slot, ngx_uint_t policy);
void ngx_http_bytemark_call_register(ngx_http_bytemark_backend_e backend,
    const ngx_http_bytemark_call_ops_t *ops);
ngx_http_bytemark_call_t *ngx_http_bytemark_call_create(ngx_http_request_t *r,
    ngx_http_bytemark_backend_e backend, ngx_http_bytemark_op_e op,
    const char *name,
    ngx_http_bytemark_call_run_pt run, ngx_http_bytemark_call_done_pt done,
    ngx_msec_t timeout);
ngx_int_t ngx_http_bytemark_call_post(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_call_start(ngx_http_bytemark_call_t *call,
    ngx_uint_t level);
ngx_int_t ngx_http_bytemark_call_thread_post(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_call_thread_task(
    ngx_http_bytemark_main_conf_t *bmcf, ngx_thread_task_t *task);
void ngx_http_bytemark_call_started(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_finish(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_abandon(ngx_http_bytemark_call_t *call);
ngx_int_t ngx_http_bytemark_call_hold(ngx_http_request_t *r);
void ngx_http_bytemark_call_free(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_call_stuck(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_answer_release(ngx_http_bytemark_answer_t *a);


#endif /* _NGX_HTTP_BYTEMARK_CALL_H_INCLUDED_ */
