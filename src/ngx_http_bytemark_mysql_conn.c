
/*
 * MySQL connections on nginx's event loop.
 *
 * Each worker has, per configured server, pool_size connection slots and a
 * queue of calls waiting for one.  A call is given a free slot by the
 * server's "wake" event (posted, so that a call never starts, or ends,
 * inside the handler that posted it), and keeps it until its statements are
 * over.  Every library call is a Connector/C non-blocking call
 * (MYSQL_OPT_NONBLOCK): its _start() runs until the library would wait,
 * then the library's socket, registered as an nginx connection, and a timer
 * for MYSQL_WAIT_TIMEOUT resume it with _cont().  No MySQL call blocks the
 * loop and none goes to a thread.
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


#include "ngx_http_bytemark_mysql.h"


/*
 * A connection idle this long is closed rather than reused: servers and
 * middleboxes drop idle connections, and a reconnect is cheaper than a
 * failed query.
 */
#define NGX_HTTP_BYTEMARK_MYSQL_IDLE_MS  60000

/* calls that may wait for a connection, per slot of a server */
#define NGX_HTTP_BYTEMARK_MYSQL_WAITING  64


static void ngx_http_bytemark_mysql_wake(ngx_event_t *ev);
static void ngx_http_bytemark_mysql_begin(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call);
static ngx_int_t ngx_http_bytemark_mysql_cancel(ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_mysql_resume(ngx_http_bytemark_mysql_conn_t *conn,
    int ready);
static ngx_int_t ngx_http_bytemark_mysql_wait(
    ngx_http_bytemark_mysql_conn_t *conn, int status);
static void ngx_http_bytemark_mysql_event(ngx_event_t *ev);
static void ngx_http_bytemark_mysql_idle_event(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_event_t *ev);
static void ngx_http_bytemark_mysql_forget(ngx_http_bytemark_mysql_conn_t *conn);
static int ngx_http_bytemark_mysql_op_connect(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static void ngx_http_bytemark_mysql_connected(
    ngx_http_bytemark_mysql_conn_t *conn);
static int ngx_http_bytemark_mysql_op_prepare(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static void ngx_http_bytemark_mysql_prepared(
    ngx_http_bytemark_mysql_conn_t *conn);
static ngx_int_t ngx_http_bytemark_mysql_bind_row(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_uint_t sql);
static int ngx_http_bytemark_mysql_op_execute(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static int ngx_http_bytemark_mysql_op_store(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static void ngx_http_bytemark_mysql_stmt_done(
    ngx_http_bytemark_mysql_conn_t *conn);
static ngx_uint_t ngx_http_bytemark_mysql_gone(unsigned int err);


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

            for (n = 0; n < NGX_HTTP_BYTEMARK_SQL_UPSERT * NGX_HTTP_BYTEMARK_COLS;
                 n++)
            {
                free(conn->row[n / NGX_HTTP_BYTEMARK_COLS]
                         .buf[n % NGX_HTTP_BYTEMARK_COLS]);
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
    ngx_http_bytemark_mysql_node_t  *node;
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = call->bmcf->mysql;
    node = &pool->nodes[call->slot - NGX_HTTP_BYTEMARK_BREAKER_MYSQL];

    if (node->nwaiting
        >= node->conf->pool_size * NGX_HTTP_BYTEMARK_MYSQL_WAITING)
    {
        ngx_snprintf((u_char *) call->error, sizeof(call->error),
                     "%ui requests already wait for mysql server #%ui%Z",
                     node->nwaiting, node->index + 1);
        return NGX_ERROR;
    }

    call->cancel = ngx_http_bytemark_mysql_cancel;
    call->conn = NULL;

    ngx_queue_insert_tail(&node->waiting, &call->queue);
    node->nwaiting++;

    if (!node->wake.posted) {
        ngx_post_event(&node->wake, &ngx_posted_events);
    }

    return NGX_OK;
}


/* posted event: free connections go to the calls that wait, oldest first */

static void
ngx_http_bytemark_mysql_wake(ngx_event_t *ev)
{
    ngx_uint_t                       i;
    ngx_queue_t                     *q;
    ngx_http_bytemark_call_t        *call;
    ngx_http_bytemark_mysql_conn_t  *conn, *fresh;
    ngx_http_bytemark_mysql_node_t  *node;

    node = ev->data;

    while (!ngx_queue_empty(&node->waiting)) {

        conn = NULL;
        fresh = NULL;

        /* an open connection first: a new one costs a handshake */
        for (i = 0; i < node->conf->pool_size; i++) {
            if (node->conns[i].busy) {
                continue;
            }

            if (node->conns[i].mysql) {
                conn = &node->conns[i];
                break;
            }

            if (fresh == NULL) {
                fresh = &node->conns[i];
            }
        }

        if (conn == NULL) {
            conn = fresh;
        }

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

        ngx_http_bytemark_mysql_begin(conn, call);
    }
}


static void
ngx_http_bytemark_mysql_begin(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call)
{
    conn->busy = 1;
    conn->cancelled = 0;
    conn->call = call;
    call->conn = conn;

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

    /* a failure from here on is the call's, not an earlier server's */
    call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_NONE;

    call->run(call);
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

    if (conn->call) {
        conn->call->conn = NULL;
        conn->call = NULL;
    }

    if (!ngx_queue_empty(&node->waiting) && !node->wake.posted) {
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
    ngx_http_bytemark_mysql_node_t  *node;

    if (call->conn) {
        return NGX_DECLINED;
    }

    node = &call->bmcf->mysql->nodes[call->slot
                                     - NGX_HTTP_BYTEMARK_BREAKER_MYSQL];
    ngx_queue_remove(&call->queue);
    node->nwaiting--;

    ngx_snprintf((u_char *) call->error, sizeof(call->error),
                 "all %ui connections to mysql server #%ui are busy%Z",
                 node->conf->pool_size, node->index + 1);
    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;
    call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_TIMEOUT;

    return NGX_OK;
}


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


/*
 * An idle connection became readable: the server closed it (a restart, its
 * wait_timeout) or said why it is about to.  It is closed now rather than
 * failing the next call's first statement.
 */

static void
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

static void
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

    if (conn->mysql) {
        mysql_close(conn->mysql);
        conn->mysql = NULL;
    }

    /* after their connection: no COM_STMT_CLOSE, memory only */
    for (i = 0; i < NGX_HTTP_BYTEMARK_SQL_N; i++) {
        if (conn->stmt[i]) {
            mysql_stmt_close(conn->stmt[i]);
            conn->stmt[i] = NULL;
        }
    }

    conn->wait = 0;
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

    conn->then = next;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_connect,
                                ngx_http_bytemark_mysql_connected);
}


static int
ngx_http_bytemark_mysql_op_connect(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    ngx_http_bytemark_mysql_server_t  *srv;

    if (ready) {
        return mysql_real_connect_cont(&conn->ret_mysql, conn->mysql, ready);
    }

    srv = conn->node->conf;

    /* a host was resolved at configuration time: the library gets its
     * address and never looks a name up; strings are NUL-terminated */
    return mysql_real_connect_start(&conn->ret_mysql, conn->mysql,
               srv->address.len ? (char *) srv->address.data : NULL,
               (char *) srv->user.data,
               srv->password.len ? (char *) srv->password.data : NULL,
               (char *) srv->database.data,
               (unsigned int) srv->port,
               srv->socket.len ? (char *) srv->socket.data : NULL,
               0);
}


static void
ngx_http_bytemark_mysql_connected(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_step_pt  next;

    next = conn->then;

    if (conn->ret_mysql == NULL) {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "cannot connect to mysql server #%u: %s",
                 (unsigned) conn->node->index + 1,
                 mysql_error(conn->mysql));
        conn->call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        ngx_http_bytemark_mysql_close(conn);
        conn->end(conn, NGX_DECLINED);
        return;
    }

    conn->generation = conn->node->generation;

    next(conn);
}


/* statement sql, prepared once per connection and kept, then next() */

void
ngx_http_bytemark_mysql_prepare(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql, ngx_http_bytemark_mysql_step_pt next)
{
    MYSQL_STMT  *stmt;

    if (conn->stmt[sql]) {
        next(conn);
        return;
    }

    stmt = mysql_stmt_init(conn->mysql);
    if (stmt == NULL) {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "mysql_stmt_init(): %s", mysql_error(conn->mysql));
        conn->end(conn, NGX_DECLINED);
        return;
    }

    conn->stmt[sql] = stmt;
    conn->stmt_op = stmt;
    conn->sql = sql;
    conn->then = next;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_prepare,
                                ngx_http_bytemark_mysql_prepared);
}


static int
ngx_http_bytemark_mysql_op_prepare(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    const char  *sql;

    if (ready) {
        return mysql_stmt_prepare_cont(&conn->ret_int, conn->stmt_op, ready);
    }

    sql = conn->node->pool->sql[conn->sql];

    return mysql_stmt_prepare_start(&conn->ret_int, conn->stmt_op, sql,
                                    strlen(sql));
}


static void
ngx_http_bytemark_mysql_prepared(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_int_t                        rc;
    ngx_http_bytemark_mysql_step_pt  next;

    next = conn->then;

    if (conn->ret_int != 0) {
        rc = ngx_http_bytemark_mysql_stmt_error(conn->stmt_op, conn->call,
                                                "prepare");
        mysql_stmt_close(conn->stmt_op);
        conn->stmt[conn->sql] = NULL;

        /* as before: a statement that cannot be prepared ends the
         * connection, which a retry replaces */
        conn->end(conn, rc == NGX_ERROR ? NGX_DECLINED : rc);
        return;
    }

    if (ngx_http_bytemark_mysql_bind_row(conn, conn->sql) != NGX_OK) {
        conn->end(conn, NGX_ERROR);
        return;
    }

    next(conn);
}


/* the result buffers of a SELECT, kept with the connection slot */

static ngx_int_t
ngx_http_bytemark_mysql_bind_row(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql)
{
    size_t                          size;
    ngx_uint_t                      i;
    MYSQL_STMT                     *stmt;
    ngx_http_bytemark_mysql_row_t  *row;

    static const size_t  initial[NGX_HTTP_BYTEMARK_COLS] = {
        64, 32, 64, 32, 1024, 80, 32
    };

    stmt = conn->stmt[sql];

    if (sql == NGX_HTTP_BYTEMARK_SQL_UPSERT) {
        return NGX_OK;
    }

    if (sql == NGX_HTTP_BYTEMARK_SQL_OWNER) {
        ngx_memzero(&conn->owner_bind, sizeof(MYSQL_BIND));
        conn->owner_bind.buffer_type = MYSQL_TYPE_LONGLONG;
        conn->owner_bind.buffer = &conn->owner;
        conn->owner_bind.is_unsigned = 1;

        if (mysql_stmt_bind_result(stmt, &conn->owner_bind) != 0) {
            return ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                      "bind result");
        }

        return NGX_OK;
    }

    if (mysql_stmt_field_count(stmt) != NGX_HTTP_BYTEMARK_COLS) {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "unexpected result shape from the pass table");
        return NGX_ERROR;
    }

    row = &conn->row[sql];

    for (i = 0; i < NGX_HTTP_BYTEMARK_COLS; i++) {

        if (row->buf[i] == NULL) {
            size = initial[i];

            row->buf[i] = malloc(size);
            if (row->buf[i] == NULL) {
                snprintf(conn->call->error, sizeof(conn->call->error),
                         "out of memory");
                return NGX_ERROR;
            }

            row->size[i] = size;
        }

        ngx_memzero(&row->bind[i], sizeof(MYSQL_BIND));

        /* one byte kept for the NUL that numbers are parsed with */
        row->bind[i].buffer_type = MYSQL_TYPE_STRING;
        row->bind[i].buffer = row->buf[i];
        row->bind[i].buffer_length = row->size[i] - 1;
        row->bind[i].length = &row->length[i];
        row->bind[i].is_null = &row->is_null[i];
    }

    if (mysql_stmt_bind_result(stmt, row->bind) != 0) {
        return ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                  "bind result");
    }

    return NGX_OK;
}


/*
 * The next row of a stored result (memory only, no I/O): 0, MYSQL_NO_DATA
 * or 1.  A value longer than its buffer grows it, and is fetched again.
 */

int
ngx_http_bytemark_mysql_fetch(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql)
{
    int                             rc;
    char                           *p;
    size_t                          size;
    ngx_uint_t                      i, grown;
    MYSQL_STMT                     *stmt;
    ngx_http_bytemark_mysql_row_t  *row;

    stmt = conn->stmt[sql];
    row = &conn->row[sql];

    rc = mysql_stmt_fetch(stmt);

    if (rc != MYSQL_DATA_TRUNCATED) {
        return rc;
    }

    grown = 0;

    for (i = 0; i < NGX_HTTP_BYTEMARK_COLS; i++) {

        if (row->is_null[i] || row->length[i] < row->size[i]) {
            continue;
        }

        size = ngx_max(row->length[i] + 1, row->size[i] * 2);

        p = realloc(row->buf[i], size);
        if (p == NULL) {
            return 1;
        }

        row->buf[i] = p;
        row->size[i] = size;
        row->bind[i].buffer = p;
        row->bind[i].buffer_length = size - 1;

        if (mysql_stmt_fetch_column(stmt, &row->bind[i], (unsigned int) i, 0)
            != 0)
        {
            return 1;
        }

        grown = 1;
    }

    if (grown && mysql_stmt_bind_result(stmt, row->bind) != 0) {
        return 1;
    }

    return 0;
}


/* executes a bound statement, then next(); an error ends the call's work */

void
ngx_http_bytemark_mysql_execute(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL_STMT *stmt, ngx_http_bytemark_mysql_step_pt next)
{
    conn->stmt_op = stmt;
    conn->then = next;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_execute,
                                ngx_http_bytemark_mysql_stmt_done);
}


/* reads the whole result into memory, then next() */

void
ngx_http_bytemark_mysql_store(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL_STMT *stmt, ngx_http_bytemark_mysql_step_pt next)
{
    conn->stmt_op = stmt;
    conn->then = next;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_store,
                                ngx_http_bytemark_mysql_stmt_done);
}


static int
ngx_http_bytemark_mysql_op_execute(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready ? mysql_stmt_execute_cont(&conn->ret_int, conn->stmt_op, ready)
                 : mysql_stmt_execute_start(&conn->ret_int, conn->stmt_op);
}


static int
ngx_http_bytemark_mysql_op_store(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready
           ? mysql_stmt_store_result_cont(&conn->ret_int, conn->stmt_op, ready)
           : mysql_stmt_store_result_start(&conn->ret_int, conn->stmt_op);
}


/*
 * After an execute or a store: an error is the caller's to judge when it
 * has asked for it (the upsert maps refusals to 400), else it ends here.
 */

static void
ngx_http_bytemark_mysql_stmt_done(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_step_pt  next;

    next = conn->then;

    if (conn->ret_int != 0 && conn->op == ngx_http_bytemark_mysql_op_store) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(conn->stmt_op,
                                                   conn->call, "store result"));
        return;
    }

    next(conn);
}


int
ngx_http_bytemark_mysql_op_autocommit_off(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready ? mysql_autocommit_cont(&conn->ret_bool, conn->mysql, ready)
                 : mysql_autocommit_start(&conn->ret_bool, conn->mysql, 0);
}


int
ngx_http_bytemark_mysql_op_autocommit_on(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready ? mysql_autocommit_cont(&conn->ret_bool, conn->mysql, ready)
                 : mysql_autocommit_start(&conn->ret_bool, conn->mysql, 1);
}


int
ngx_http_bytemark_mysql_op_commit(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready ? mysql_commit_cont(&conn->ret_bool, conn->mysql, ready)
                 : mysql_commit_start(&conn->ret_bool, conn->mysql);
}


int
ngx_http_bytemark_mysql_op_rollback(ngx_http_bytemark_mysql_conn_t *conn,
    int ready)
{
    return ready ? mysql_rollback_cont(&conn->ret_bool, conn->mysql, ready)
                 : mysql_rollback_start(&conn->ret_bool, conn->mysql);
}


/* NGX_DECLINED when the connection is gone, NGX_AGAIN for a deadlock,
 * NGX_ERROR otherwise */

ngx_int_t
ngx_http_bytemark_mysql_stmt_error(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, const char *what)
{
    unsigned int  err;

    err = mysql_stmt_errno(stmt);

    snprintf(call->error, sizeof(call->error), "%s: %s (%u)", what,
             mysql_stmt_error(stmt), err);

    if (err == 1205 || err == 1213) {
        /* lock wait timeout, deadlock: the transaction may be run again */
        return NGX_AGAIN;
    }

    return ngx_http_bytemark_mysql_gone(err) ? NGX_DECLINED : NGX_ERROR;
}


ngx_int_t
ngx_http_bytemark_mysql_error(MYSQL *m, ngx_http_bytemark_call_t *call,
    const char *what)
{
    unsigned int  err;

    err = mysql_errno(m);

    snprintf(call->error, sizeof(call->error), "%s: %s (%u)", what,
             mysql_error(m), err);

    if (err == 1205 || err == 1213) {
        return NGX_AGAIN;
    }

    return ngx_http_bytemark_mysql_gone(err) ? NGX_DECLINED : NGX_ERROR;
}


static ngx_uint_t
ngx_http_bytemark_mysql_gone(unsigned int err)
{
    switch (err) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_SERVER_LOST_EXTENDED:
    case 1927:  /* ER_CONNECTION_KILLED */
    case 4031:  /* ER_CLIENT_INTERACTION_TIMEOUT */
    case 1053:  /* ER_SERVER_SHUTDOWN */
        return 1;
    default:
        return 0;
    }
}
