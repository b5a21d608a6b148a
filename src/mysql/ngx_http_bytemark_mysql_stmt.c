
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Prepared statements on a MySQL connection, each step a non-blocking
 * operation of the driver (ngx_http_bytemark_mysql_loop.c): prepared once
 * per connection and kept, executed, their results stored and fetched into
 * buffers kept with the connection slot; the transaction statements of an
 * ingest; what an error means for the connection.
 */


#include "ngx_http_bytemark_mysql_private.h"


static int ngx_http_bytemark_mysql_op_prepare(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static void ngx_http_bytemark_mysql_prepared(
    ngx_http_bytemark_mysql_conn_t *conn);
static ngx_http_bytemark_mysql_row_t *ngx_http_bytemark_mysql_row(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_uint_t sql);
static int ngx_http_bytemark_mysql_op_execute(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static int ngx_http_bytemark_mysql_op_store(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
static void ngx_http_bytemark_mysql_stmt_done(
    ngx_http_bytemark_mysql_conn_t *conn);
static ngx_uint_t ngx_http_bytemark_mysql_gone(unsigned int err);


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


/*
 * The result buffers of a SELECT, kept with the connection slot.  The
 * batched SELECTs of a kind share theirs (one more column, the user): a
 * batch binds them again before it runs, as a buffer may have grown.
 */

ngx_int_t
ngx_http_bytemark_mysql_bind_row(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql)
{
    size_t                          size;
    ngx_uint_t                      i;
    MYSQL_STMT                     *stmt;
    ngx_http_bytemark_mysql_row_t  *row;

    static const size_t  initial[NGX_HTTP_BYTEMARK_BCOLS] = {
        64, 32, 64, 32, 1024, 80, 32, 32
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

    row = ngx_http_bytemark_mysql_row(conn, sql);
    row->ncols = (sql >= NGX_HTTP_BYTEMARK_SQL_BATCH)
                 ? NGX_HTTP_BYTEMARK_BCOLS : NGX_HTTP_BYTEMARK_COLS;

    if (mysql_stmt_field_count(stmt) != row->ncols) {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "unexpected result shape from the pass table");
        return NGX_ERROR;
    }

    for (i = 0; i < row->ncols; i++) {

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
    row = ngx_http_bytemark_mysql_row(conn, sql);

    rc = mysql_stmt_fetch(stmt);

    if (rc != MYSQL_DATA_TRUNCATED) {
        return rc;
    }

    grown = 0;

    for (i = 0; i < row->ncols; i++) {

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


static ngx_http_bytemark_mysql_row_t *
ngx_http_bytemark_mysql_row(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql)
{
    if (sql >= NGX_HTTP_BYTEMARK_SQL_BATCH) {
        return &conn->brow[(sql - NGX_HTTP_BYTEMARK_SQL_BATCH)
                           / NGX_HTTP_BYTEMARK_MYSQL_SIZES];
    }

    return &conn->row[sql];
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
