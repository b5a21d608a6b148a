
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MySQL connections on nginx's event loop: the per-worker pools and their
 * wait queues here, the non-blocking driver in ngx_http_bytemark_mysql_loop.c,
 * the statements in ngx_http_bytemark_mysql_stmt.c.
 *
 * Each worker has, per configured server, pool_size connection slots and
 * two queues of calls waiting for one: ingests, and lookups (at most
 * pool->inflight connections read at a time; the next takes the lookups
 * that queued meanwhile as one batch: ngx_http_bytemark_mysql_batch.c).  A
 * call is given a free slot by the server's "wake" event (posted, so that a
 * call never starts, or ends, inside the handler that posted it), and keeps
 * it until its statements are over.  Every library call is a Connector/C
 * non-blocking call (MYSQL_OPT_NONBLOCK): its _start() runs until the
 * library would wait, then the library's socket, registered as an nginx
 * connection, and a timer for MYSQL_WAIT_TIMEOUT resume it with _cont().
 * No MySQL call blocks the loop; only the connect of a TLS server goes to
 * a thread (ngx_http_bytemark_mysql_handshake.c).
 *
 * A call whose budget is spent, or whose client went away, is not
 * interrupted: its statement ends on the loop, late, and its connection
 * goes back to the pool in a known state, or the library's own timeouts
 * fail it and the connection is closed, never reused in an unknown state.
 *
 * mysql_close() and mysql_stmt_close() are the only calls not made in
 * their non-blocking form: a connection is closed only when it is idle
 * (its COM_QUIT goes into an empty socket buffer) or broken (the library
 * has closed the socket already, or it is shut down and the write fails at
 * once), and statements are closed after their connection, when they free
 * memory only.
 */


#include "ngx_http_bytemark_mysql_private.h"


/*
 * A connection idle this long is closed rather than reused: servers and
 * middleboxes drop idle connections, and a reconnect is cheaper than a
 * failed query.
 */
#define NGX_HTTP_BYTEMARK_MYSQL_IDLE_MS  60000

/* calls that may wait for a connection, per slot of a server */
#define NGX_HTTP_BYTEMARK_MYSQL_WAITING  64


static void ngx_http_bytemark_mysql_wake(ngx_event_t *ev);
static ngx_http_bytemark_mysql_conn_t *ngx_http_bytemark_mysql_free_conn(
    ngx_http_bytemark_mysql_node_t *node);
static ngx_uint_t ngx_http_bytemark_mysql_take(
    ngx_http_bytemark_mysql_node_t *node, ngx_http_bytemark_call_t **members);
static void ngx_http_bytemark_mysql_begin(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t n);
static ngx_int_t ngx_http_bytemark_mysql_cancel(ngx_http_bytemark_call_t *call);


ngx_int_t
ngx_http_bytemark_mysql_pool_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_uint_t                         i, k;
    ngx_http_bytemark_mysql_node_t    *node;
    ngx_http_bytemark_mysql_server_t  *srv;

    srv = bmcf->mysql_servers->elts;
    pool->nnodes = bmcf->mysql_servers->nelts;

    pool->nodes = ngx_pcalloc(cycle->pool,
                      pool->nnodes * sizeof(ngx_http_bytemark_mysql_node_t));
    if (pool->nodes == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < pool->nnodes; i++) {
        node = &pool->nodes[i];

        node->conf = &srv[i];
        node->pool = pool;
        node->index = i;
        ngx_queue_init(&node->waiting);
        ngx_queue_init(&node->reads);

        node->wake.handler = ngx_http_bytemark_mysql_wake;
        node->wake.data = node;
        node->wake.log = cycle->log;

        node->conns = ngx_pcalloc(cycle->pool,
                     srv[i].pool_size * sizeof(ngx_http_bytemark_mysql_conn_t));
        if (node->conns == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < srv[i].pool_size; k++) {
            node->conns[k].node = node;
        }
    }

    return NGX_OK;
}


/* worker exit: no call is in flight any more, unless nginx was terminated */

void
ngx_http_bytemark_mysql_pool_done(ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_uint_t                       i, k, n;
    ngx_http_bytemark_mysql_conn_t  *conn;

    for (i = 0; i < pool->nnodes; i++) {

        if (pool->nodes[i].wake.posted) {
            ngx_delete_posted_event(&pool->nodes[i].wake);
        }

        for (k = 0; k < pool->nodes[i].conf->pool_size; k++) {
            conn = &pool->nodes[i].conns[k];

            if (conn->wait && conn->mysql) {
                /* suspended in the library: its close must not wait */
                (void) shutdown(mysql_get_socket(conn->mysql), SHUT_RDWR);
            }

            ngx_http_bytemark_mysql_close(conn);

            for (n = 0; n < NGX_HTTP_BYTEMARK_BCOLS; n++) {
                free(conn->row[NGX_HTTP_BYTEMARK_SQL_TICKETS].buf[n]);
                free(conn->row[NGX_HTTP_BYTEMARK_SQL_PASS].buf[n]);
                free(conn->brow[0].buf[n]);
                free(conn->brow[1].buf[n]);
            }
        }
    }
}


/*
 * Event loop: the call waits for a connection of its server (call->slot).
 * NGX_ERROR: too many calls wait already; the caller answers at once.
 */

ngx_int_t
ngx_http_bytemark_mysql_post(ngx_http_bytemark_call_t *call)
{
    ngx_uint_t                       read, *nwaiting;
    ngx_queue_t                     *waiting;
    ngx_http_bytemark_mysql_node_t  *node;
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = call->bmcf->mysql;
    node = &pool->nodes[call->slot - NGX_HTTP_BYTEMARK_BREAKER_MYSQL];

    /* lookups queue apart: they may wait for a batch while a connection
     * is free, ingests never do */
    read = ngx_http_bytemark_mysql_is_read(call);
    waiting = read ? &node->reads : &node->waiting;
    nwaiting = read ? &node->nreads : &node->nwaiting;

    if (*nwaiting >= node->conf->pool_size * NGX_HTTP_BYTEMARK_MYSQL_WAITING) {
        ngx_snprintf((u_char *) call->error, sizeof(call->error),
                     "%ui requests already wait for mysql server #%ui%Z",
                     *nwaiting, node->index + 1);
        return NGX_ERROR;
    }

    call->cancel = ngx_http_bytemark_mysql_cancel;
    call->conn = NULL;

    ngx_queue_insert_tail(waiting, &call->queue);
    (*nwaiting)++;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, call->log, 0,
                   "bytemark: mysql %s queued for server #%ui, %ui waiting",
                   call->name, node->index + 1, *nwaiting);

    if (!node->wake.posted) {
        ngx_post_event(&node->wake, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * Posted event: free connections go to the calls that wait, oldest first;
 * ingests, then lookups, at most "inflight" connections of the server
 * reading at a time, each taking the lookups that queued meanwhile as one
 * batch (ngx_http_bytemark_mysql_batch.c).
 */

static void
ngx_http_bytemark_mysql_wake(ngx_event_t *ev)
{
    ngx_uint_t                       n, inflight;
    ngx_queue_t                     *q;
    ngx_http_bytemark_call_t        *call;
    ngx_http_bytemark_mysql_conn_t  *conn;
    ngx_http_bytemark_mysql_node_t  *node;

    node = ev->data;

    while (!ngx_queue_empty(&node->waiting)) {

        conn = ngx_http_bytemark_mysql_free_conn(node);
        if (conn == NULL) {
            return;
        }

        q = ngx_queue_head(&node->waiting);
        ngx_queue_remove(q);
        node->nwaiting--;

        call = ngx_queue_data(q, ngx_http_bytemark_call_t, queue);

        if (call->request == NULL && !call->always_done) {
            /* its client went away while it waited: nothing to do */
            ngx_http_bytemark_call_finish(call);
            continue;
        }

        conn->batch.members[0] = call;
        ngx_http_bytemark_mysql_begin(conn, 1);
    }

    inflight = ngx_min(node->pool->inflight, node->conf->pool_size);

    while (!ngx_queue_empty(&node->reads) && node->reading < inflight) {

        conn = ngx_http_bytemark_mysql_free_conn(node);
        if (conn == NULL) {
            return;
        }

        n = ngx_http_bytemark_mysql_take(node, conn->batch.members);

        if (n) {
            ngx_http_bytemark_mysql_begin(conn, n);
        }
    }
}


/* an open connection first: a new one costs a handshake */

static ngx_http_bytemark_mysql_conn_t *
ngx_http_bytemark_mysql_free_conn(ngx_http_bytemark_mysql_node_t *node)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_mysql_conn_t  *fresh;

    fresh = NULL;

    for (i = 0; i < node->conf->pool_size; i++) {
        if (node->conns[i].busy) {
            continue;
        }

        if (node->conns[i].mysql) {
            return &node->conns[i];
        }

        if (fresh == NULL) {
            fresh = &node->conns[i];
        }
    }

    return fresh;
}


/*
 * The oldest lookup and, up to bytemark_mysql_batch, the queued lookups of
 * its kind (tickets or pass), oldest first; lookups whose client went away
 * end here.
 */

static ngx_uint_t
ngx_http_bytemark_mysql_take(ngx_http_bytemark_mysql_node_t *node,
    ngx_http_bytemark_call_t **members)
{
    ngx_uint_t                      n;
    ngx_queue_t                    *q, *next;
    ngx_http_bytemark_call_t       *call;
    ngx_http_bytemark_call_run_pt   run;

    n = 0;
    run = NULL;

    for (q = ngx_queue_head(&node->reads);
         q != ngx_queue_sentinel(&node->reads) && n < node->pool->batch;
         q = next)
    {
        next = ngx_queue_next(q);
        call = ngx_queue_data(q, ngx_http_bytemark_call_t, queue);

        if (call->request == NULL && !call->always_done) {
            ngx_queue_remove(q);
            node->nreads--;
            ngx_http_bytemark_call_finish(call);
            continue;
        }

        if (run && call->run != run) {
            continue;
        }

        run = call->run;

        ngx_queue_remove(q);
        node->nreads--;
        members[n++] = call;
    }

    return n;
}


static void
ngx_http_bytemark_mysql_begin(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t n)
{
    ngx_uint_t                 i;
    ngx_msec_t                 deadline;
    ngx_http_bytemark_call_t  *call;

    call = conn->batch.members[0];

    conn->busy = 1;
    conn->cancelled = 0;
    conn->call = call;
    conn->batch.nmembers = n;

    ngx_http_bytemark_metrics_mysql_acquire(conn->mysql != NULL);

    if (conn->mysql
        && (conn->generation != conn->node->generation
            || ngx_current_msec - conn->used > NGX_HTTP_BYTEMARK_MYSQL_IDLE_MS))
    {
        ngx_http_bytemark_mysql_close(conn);
    }

    conn->attempt = 0;
    conn->start = ngx_current_msec;
    conn->deadline = call->started + call->timeout;

    for (i = 0; i < n; i++) {
        call = conn->batch.members[i];
        call->conn = conn;

        /* a failure from here on is the call's, not an earlier server's */
        call->error_kind = NGX_HTTP_BYTEMARK_ERR_NONE;

        deadline = call->started + call->timeout;

        if ((ngx_msec_int_t) (deadline - conn->deadline) > 0) {
            conn->deadline = deadline;
        }
    }

    call = conn->call;

    if (ngx_http_bytemark_mysql_is_read(call)) {
        conn->reading = 1;
        conn->node->reading++;
    }

    if (n == 1) {
        call->run(call);
        return;
    }

    ngx_http_bytemark_mysql_batch_read(conn);
}


/*
 * The call's statements are over: its connection goes back to the pool
 * (closed first when it broke, or its socket had to be shut down), and the
 * next waiting call
 * gets it.
 */

void
ngx_http_bytemark_mysql_release(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t broken)
{
    ngx_uint_t                       i;
    ngx_http_bytemark_mysql_node_t  *node;

    node = conn->node;

    if (broken || conn->cancelled) {
        if (conn->mysql && conn->generation == node->generation) {
            node->generation++;
        }

        ngx_http_bytemark_mysql_close(conn);
    }

    ngx_http_bytemark_metrics_mysql_release(conn->mysql != NULL);

    conn->used = ngx_current_msec;
    conn->busy = 0;
    conn->op = NULL;
    conn->next = NULL;
    conn->end = NULL;

    for (i = 0; i < conn->batch.nmembers; i++) {
        conn->batch.members[i]->conn = NULL;
    }

    conn->batch.nmembers = 0;
    conn->call = NULL;

    if (conn->reading) {
        conn->reading = 0;
        node->reading--;
    }

    if ((!ngx_queue_empty(&node->waiting) || !ngx_queue_empty(&node->reads))
        && !node->wake.posted)
    {
        ngx_post_event(&node->wake, &ngx_posted_events);
    }
}


/*
 * The budget is spent.  A call that still waits for a connection leaves the
 * queue: NGX_OK, the call layer ends it.  One that runs is not interrupted:
 * its statement finishes on the loop (a late answer, and the connection goes
 * back to the pool in a known state), or the library's own timeout fails it
 * and the connection is closed.  Shutting the socket down instead would
 * close a connection, and leave a query running on the server, every time
 * a server is merely slow.
 */

static ngx_int_t
ngx_http_bytemark_mysql_cancel(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_conn_t  *conn;
    ngx_http_bytemark_mysql_node_t  *node;

    conn = call->conn;

    if (conn) {
        if (conn->batch.nmembers > 1) {
            /* one connection held, however many of its lookups time out */
            ngx_http_bytemark_call_stuck(conn->call);
            return NGX_DONE;
        }

        return NGX_DECLINED;
    }

    node = &call->bmcf->mysql->nodes[call->slot
                                     - NGX_HTTP_BYTEMARK_BREAKER_MYSQL];
    ngx_queue_remove(&call->queue);

    if (ngx_http_bytemark_mysql_is_read(call)) {
        node->nreads--;

    } else {
        node->nwaiting--;
    }

    if (ngx_http_bytemark_mysql_free_conn(node)) {
        /* a connection was free: the reads in flight held it back */
        ngx_snprintf((u_char *) call->error, sizeof(call->error),
                     "queued behind %ui reads in flight to mysql "
                     "server #%ui%Z", node->reading, node->index + 1);

    } else {
        ngx_snprintf((u_char *) call->error, sizeof(call->error),
                     "all %ui connections to mysql server #%ui are busy%Z",
                     node->conf->pool_size, node->index + 1);
    }

    call->result = NGX_HTTP_BYTEMARK_FAILED;
    call->error_kind = NGX_HTTP_BYTEMARK_ERR_TIMEOUT;

    return NGX_OK;
}


/*
 * An idle connection became readable: the server closed it (a restart, its
 * wait_timeout) or said why it is about to.  It is closed now rather than
 * failing the next call's first statement.
 */

void
ngx_http_bytemark_mysql_idle_event(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_event_t *ev)
{
    char  buf[1];

    if (ev->write || conn->busy || conn->c == NULL) {
        return;
    }

    if (recv(conn->c->fd, buf, 1, MSG_PEEK) == -1
        && ngx_socket_errno == NGX_EAGAIN)
    {
        ev->ready = 0;
        (void) ngx_handle_read_event(ev, 0);
        return;
    }

    /* the gauges: an idle connection goes, as if taken and given back closed */
    ngx_http_bytemark_metrics_mysql_acquire(1);
    ngx_http_bytemark_mysql_close(conn);
    ngx_http_bytemark_metrics_mysql_release(0);
}


/*
 * Unregisters the library's socket; it is closed, or about to be, by the
 * library itself, so the event module is told not to touch it (a closed
 * descriptor leaves epoll by itself).
 */

void
ngx_http_bytemark_mysql_forget(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_connection_t  *c;

    c = conn->c;

    if (c == NULL) {
        return;
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (ngx_del_conn) {
        (void) ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active || c->read->disabled) {
            (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active || c->write->disabled) {
            (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    conn->c = NULL;
}


void
ngx_http_bytemark_mysql_close(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_uint_t  i;

    ngx_http_bytemark_mysql_forget(conn);
    ngx_http_bytemark_mysql_tls_restore(conn);

    if (conn->mysql) {
        mysql_close(conn->mysql);
        conn->mysql = NULL;
    }

    /* after their connection: no COM_STMT_CLOSE, memory only */
    for (i = 0; i < NGX_HTTP_BYTEMARK_SQL_ALL; i++) {
        if (conn->stmt[i]) {
            mysql_stmt_close(conn->stmt[i]);
            conn->stmt[i] = NULL;
        }
    }

    conn->wait = 0;
}
