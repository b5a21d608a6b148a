/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The connect of a MySQL connection with TLS, on the backend's thread pool.
 * Connector/C 3.3 does the TLS handshake on a blocking socket even inside
 * its non-blocking API (ngx_http_bytemark_mysql_tls.c), so the whole
 * connect (TCP, greeting, handshake, authentication) is one blocking
 * mysql_real_connect() in a pool thread, and the event loop never waits on
 * it.  Its waits are bounded by the budget: the library's connect, read
 * and write timeouts, and the socket's timeouts set for the handshake.
 *
 * The thread owns the connection, not the call: the connection slot stays
 * busy and its call attached, as while a statement runs on the loop.  A
 * budget spent meanwhile answers the client and marks the call stuck
 * (ngx_http_bytemark_mysql_cancel() finds it on its connection); the
 * completion handler then goes on exactly as after a non-blocking connect,
 * and the statement's end gives the connection back to the pool or closes
 * it, and ends the call.  Neither is freed under the thread: connection
 * slots live as long as the worker, and nginx destroys its thread pools,
 * waiting for their tasks, before the module's exit_process closes them.
 */


#include "ngx_http_bytemark_mysql_private.h"


static void ngx_http_bytemark_mysql_tls_thread(void *data, ngx_log_t *log);
static void ngx_http_bytemark_mysql_tls_complete(ngx_event_t *ev);


/* event loop: mysql_connect() of a TLS server; conn->mysql has its options */

void
ngx_http_bytemark_mysql_tls_connect(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_msec_t                 left;
    ngx_http_bytemark_call_t  *call;

    call = conn->call;

    left = (ngx_msec_int_t) (conn->deadline - ngx_current_msec) > 0
           ? conn->deadline - ngx_current_msec : 1;

    /* the handshake's socket timeouts: the thread reads its own clock */
    conn->tls_until = ngx_http_bytemark_mysql_tls_now() + left;

    conn->task.ctx = conn;
    conn->task.handler = ngx_http_bytemark_mysql_tls_thread;
    conn->task.event.data = conn;
    conn->task.event.handler = ngx_http_bytemark_mysql_tls_complete;
    conn->task.event.log = ngx_cycle->log;

    if (ngx_http_bytemark_call_thread_task(conn->node->pool->ssl, &conn->task)
        != NGX_OK)
    {
        /* not the server's fault: no breaker failure, no second attempt */
        snprintf(call->error, sizeof(call->error),
                 "cannot connect to mysql server #%u: TLS: the thread pool "
                 "queue is full",
                 (unsigned) conn->node->index + 1);

        mysql_close(conn->mysql);
        conn->mysql = NULL;
        conn->cancelled = 1;

        call->error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        conn->end(conn, NGX_DECLINED);
        return;
    }

    ngx_http_bytemark_metrics_thread_task(1);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server #%ui: TLS connect %p posted to "
                   "the thread pool, %M ms left",
                   conn->node->index + 1, conn, left);
}


/* a pool thread: touch nothing but the connection */

static void
ngx_http_bytemark_mysql_tls_thread(void *data, ngx_log_t *log)
{
    ngx_http_bytemark_mysql_conn_t    *conn = data;

    ngx_http_bytemark_mysql_server_t  *srv;

    srv = conn->node->conf;

    /* its I/O callback sets the name this one's handshake verifies */
    ngx_http_bytemark_mysql_tls_running(conn);

    /* as op_connect: an address, NUL-terminated strings */
    conn->ret_mysql = mysql_real_connect(conn->mysql,
                          srv->address.len ? (char *) srv->address.data : NULL,
                          (char *) srv->user.data,
                          srv->password.len ? (char *) srv->password.data
                                            : NULL,
                          (char *) srv->database.data,
                          (unsigned int) srv->port,
                          srv->socket.len ? (char *) srv->socket.data : NULL,
                          0);

    ngx_http_bytemark_mysql_tls_running(NULL);
}


/* event loop: the thread is done with the connection */

static void
ngx_http_bytemark_mysql_tls_complete(ngx_event_t *ev)
{
    ngx_http_bytemark_mysql_conn_t  *conn;

    conn = ev->data;

    ngx_http_bytemark_metrics_thread_task(-1);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server #%ui: TLS connect %p %s",
                   conn->node->index + 1, conn,
                   conn->ret_mysql ? "done" : "failed");

    ngx_http_bytemark_mysql_connected(conn);
}
