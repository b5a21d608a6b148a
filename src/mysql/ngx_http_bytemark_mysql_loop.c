
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MySQL side's non-blocking driver: a Connector/C _start() call runs
 * until the library would wait, then the library's socket, registered as
 * an nginx connection, and a timer for MYSQL_WAIT_TIMEOUT resume it with
 * _cont() (ngx_http_bytemark_mysql_run).  Opening a connection is the
 * first such operation (with TLS, a blocking one on the thread pool:
 * ngx_http_bytemark_mysql_handshake.c); the statements are
 * ngx_http_bytemark_mysql_stmt.c.
 */


#include "ngx_http_bytemark_mysql_private.h"


static void ngx_http_bytemark_mysql_resume(ngx_http_bytemark_mysql_conn_t *conn,
    int ready);
static ngx_int_t ngx_http_bytemark_mysql_wait(
    ngx_http_bytemark_mysql_conn_t *conn, int status);
static void ngx_http_bytemark_mysql_event(ngx_event_t *ev);
static int ngx_http_bytemark_mysql_op_connect(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);


/* runs op on the connection; next() follows once the library is done */

void
ngx_http_bytemark_mysql_run(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_mysql_op_pt op, ngx_http_bytemark_mysql_step_pt next)
{
    conn->op = op;
    conn->next = next;

    ngx_http_bytemark_mysql_resume(conn, 0);
}


static void
ngx_http_bytemark_mysql_resume(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    int         status;
    ngx_uint_t  n;

    status = conn->op(conn, ready);

    if (status && ngx_http_bytemark_mysql_wait(conn, status) == NGX_OK) {
        return;
    }

    if (status) {
        /*
         * Cannot wait for the socket (no free nginx connection, say): the
         * library call is made to fail now, its socket shut down, and the
         * connection is closed at the end of the statement.
         */
        (void) shutdown(mysql_get_socket(conn->mysql), SHUT_RDWR);
        conn->cancelled = 1;

        for (n = 0; status && n < 8; n++) {
            status = conn->op(conn, status);
        }

        if (status) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "bytemark: a mysql call of server #%ui cannot end",
                          conn->node->index + 1);
            return;
        }
    }

    conn->wait = 0;

    if (conn->c && conn->c->read->timer_set) {
        ngx_del_timer(conn->c->read);
    }

    conn->next(conn);
}


/* the library waits: for the socket to be readable or writable, or a time */

static ngx_int_t
ngx_http_bytemark_mysql_wait(ngx_http_bytemark_mysql_conn_t *conn, int status)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    conn->wait = status;

    fd = (ngx_socket_t) mysql_get_socket(conn->mysql);

    if (conn->c && conn->c->fd != fd) {
        /* the library closed its socket and opened another (connect) */
        ngx_http_bytemark_mysql_forget(conn);
    }

    c = conn->c;

    if (c == NULL) {
        if (fd == (ngx_socket_t) -1) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "bytemark: mysql waits without a socket");
            return NGX_ERROR;
        }

        c = ngx_get_connection(fd, ngx_cycle->log);
        if (c == NULL) {
            return NGX_ERROR;
        }

        c->data = conn;
        c->read->handler = ngx_http_bytemark_mysql_event;
        c->write->handler = ngx_http_bytemark_mysql_event;
        c->read->log = ngx_cycle->log;
        c->write->log = ngx_cycle->log;

        conn->c = c;

        if (ngx_add_conn && ngx_add_conn(c) == NGX_ERROR) {
            ngx_http_bytemark_mysql_forget(conn);
            return NGX_ERROR;
        }
    }

    if (status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT)) {
        c->read->ready = 0;

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (status & MYSQL_WAIT_WRITE) {
        c->write->ready = 0;

        if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (status & MYSQL_WAIT_TIMEOUT) {
        ngx_add_timer(c->read, mysql_get_timeout_value_ms(conn->mysql) + 1);

    } else if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    return NGX_OK;
}


static void
ngx_http_bytemark_mysql_event(ngx_event_t *ev)
{
    int                              ready;
    ngx_connection_t                *c;
    ngx_http_bytemark_mysql_conn_t  *conn;

    c = ev->data;
    conn = c->data;

    if (conn->op == NULL || conn->wait == 0) {
        ngx_http_bytemark_mysql_idle_event(conn, ev);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;
        ready = conn->wait & MYSQL_WAIT_TIMEOUT;

    } else if (ev->write) {
        ready = conn->wait & MYSQL_WAIT_WRITE;

    } else {
        ready = conn->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT);
    }

    if (ready == 0) {
        /* not what the library waits for: it tries its I/O before waiting */
        return;
    }

    ngx_http_bytemark_mysql_resume(conn, ready);
}


/* opens the connection if it is not open, then next() */

void
ngx_http_bytemark_mysql_connect(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_mysql_step_pt next)
{
    MYSQL                           *m;
    my_bool                          off;
    ngx_http_bytemark_mysql_pool_t  *pool;

    if (conn->mysql) {
        next(conn);
        return;
    }

    pool = conn->node->pool;

    m = mysql_init(NULL);
    if (m == NULL) {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "mysql_init() failed");
        conn->end(conn, NGX_DECLINED);
        return;
    }

    conn->mysql = m;

    off = 0;

    mysql_options(m, MYSQL_OPT_NONBLOCK, 0);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &pool->connect_timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &pool->io_timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &pool->io_timeout);
    mysql_options(m, MYSQL_OPT_RECONNECT, &off);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");

    /* no gap locks: concurrent ingests of new passes do not deadlock */
    mysql_options(m, MYSQL_INIT_COMMAND,
                  "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");

    if (pool->ssl) {
        ngx_http_bytemark_mysql_tls_options(conn, m);
    }

    conn->then = next;

    if (pool->ssl) {
        /* the library's TLS handshake blocks: on the thread pool */
        ngx_http_bytemark_mysql_tls_connect(conn);
        return;
    }

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_connect,
                                ngx_http_bytemark_mysql_connected);
}


static int
ngx_http_bytemark_mysql_op_connect(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    int                                status;
    ngx_http_bytemark_mysql_server_t  *srv;

    if (ready) {
        status = mysql_real_connect_cont(&conn->ret_mysql, conn->mysql, ready);

    } else {
        srv = conn->node->conf;

        /* a host was resolved at configuration time: the library gets its
         * address and never looks a name up; strings are NUL-terminated */
        status = mysql_real_connect_start(&conn->ret_mysql, conn->mysql,
                     srv->address.len ? (char *) srv->address.data : NULL,
                     (char *) srv->user.data,
                     srv->password.len ? (char *) srv->password.data : NULL,
                     (char *) srv->database.data,
                     (unsigned int) srv->port,
                     srv->socket.len ? (char *) srv->socket.data : NULL,
                     0);
    }

    return status;
}


/* the connect is over, on the loop or on a thread: the event loop goes on */

void
ngx_http_bytemark_mysql_connected(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_step_pt  next;

    next = conn->then;

    ngx_http_bytemark_mysql_tls_restore(conn);

    if (conn->ret_mysql == NULL) {
        ngx_http_bytemark_mysql_connect_error(conn);
        conn->call->error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        ngx_http_bytemark_mysql_close(conn);
        conn->end(conn, NGX_DECLINED);
        return;
    }

    if (ngx_http_bytemark_mysql_tls_check(conn) != NGX_OK) {
        conn->call->error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        ngx_http_bytemark_mysql_close(conn);
        conn->end(conn, NGX_DECLINED);
        return;
    }

    conn->generation = conn->node->generation;

    next(conn);
}
