
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MySQL side of an ingest: one transaction on the primary, each step
 * an event-loop operation of the driver, the upsert of every pass, the
 * owner check of a pass that exists, the commit; a transaction that met a
 * deadlock or lost its connection is run again on a fresh one.  The reads
 * are ngx_http_bytemark_mysql.c.
 */


#include "ngx_http_bytemark_mysql_private.h"


#define NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS       3

/*
 * The table refusing a value (strict mode): a CHECK constraint (a JSON
 * column's json_valid() included), a value too long, an incorrect string
 * (a 4-byte character in a utf8mb3 column), a number out of range.  The
 * body's checks admit what SPEC's schema takes; an operator's own schema
 * may be narrower, and that is the client's data, not a backend failure.
 */
#define NGX_HTTP_BYTEMARK_ER_CONSTRAINT_FAILED  4025
#define NGX_HTTP_BYTEMARK_ER_DATA_TOO_LONG      1406
#define NGX_HTTP_BYTEMARK_ER_WRONG_VALUE        1366
#define NGX_HTTP_BYTEMARK_ER_OUT_OF_RANGE       1264


static void ngx_http_bytemark_mysql_ingest_try(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_prepare(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_begin(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_begun(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_next(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_upserted(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_owner(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_owned(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_committed(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_end(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_int_t rc);
static void ngx_http_bytemark_mysql_ingest_rolled_back(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_reset(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_ingest_done(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_int_t rc, ngx_uint_t broken);
static void ngx_http_bytemark_mysql_bind_upsert(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_http_bytemark_ingest_pass_t *p);
static ngx_int_t ngx_http_bytemark_mysql_refused(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p);
static ngx_uint_t ngx_http_bytemark_mysql_names(const char *msg,
    const char *name);


/*
 * Event loop, with a connection of the primary: an ingest, in one
 * transaction (writes never go to a replica).  The upsert is idempotent, so
 * a transaction that met a deadlock or lost its connection (even during
 * COMMIT) is simply run again.
 */

void
ngx_http_bytemark_mysql_ingest(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_conn_t  *conn;

    conn = call->conn;
    conn->end = ngx_http_bytemark_mysql_ingest_end;

    call->result = NGX_HTTP_BYTEMARK_FAILED;

    if (!ngx_http_bytemark_mysql_breaker(call, 0)) {
        ngx_http_bytemark_mysql_release(conn, 0);
        ngx_http_bytemark_call_finish(call);
        return;
    }

    ngx_http_bytemark_mysql_ingest_try(conn);
}


static void
ngx_http_bytemark_mysql_ingest_try(ngx_http_bytemark_mysql_conn_t *conn)
{
    conn->start = ngx_current_msec;
    conn->rc = NGX_OK;

    ngx_http_bytemark_mysql_connect(conn,
                                    ngx_http_bytemark_mysql_ingest_prepare);
}


static void
ngx_http_bytemark_mysql_ingest_prepare(ngx_http_bytemark_mysql_conn_t *conn)
{
    if (conn->stmt[NGX_HTTP_BYTEMARK_SQL_UPSERT] == NULL) {
        ngx_http_bytemark_mysql_prepare(conn, NGX_HTTP_BYTEMARK_SQL_UPSERT,
                                        ngx_http_bytemark_mysql_ingest_prepare);
        return;
    }

    ngx_http_bytemark_mysql_prepare(conn, NGX_HTTP_BYTEMARK_SQL_OWNER,
                                    ngx_http_bytemark_mysql_ingest_begin);
}


static void
ngx_http_bytemark_mysql_ingest_begin(ngx_http_bytemark_mysql_conn_t *conn)
{
    /* from here on a failure leaves a transaction to roll back */
    conn->rc = NGX_AGAIN;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_autocommit_off,
                                ngx_http_bytemark_mysql_ingest_begun);
}


static void
ngx_http_bytemark_mysql_ingest_begun(ngx_http_bytemark_mysql_conn_t *conn)
{
    if (conn->ret_bool) {
        conn->end(conn, ngx_http_bytemark_mysql_error(conn->mysql, conn->call,
                                                      "start transaction"));
        return;
    }

    conn->pass = 0;

    ngx_http_bytemark_mysql_ingest_next(conn);
}


/* the upsert of the next pass, or the commit after the last */

static void
ngx_http_bytemark_mysql_ingest_next(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT                       *stmt;
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_call_ingest_t  *ingest;

    call = conn->call;
    ingest = ngx_http_bytemark_call_ingest(call);

    if (conn->pass == ingest->npasses) {

        if (call->budget.timedout) {
            /* the client was told nothing was written: roll back */
            snprintf(call->error, sizeof(call->error),
                     "the budget was spent before the commit");
            conn->end(conn, NGX_ERROR);
            return;
        }

        /* from here on, a failure leaves the outcome unknown */
        ingest->commit_sent = 1;

        ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_commit,
                                    ngx_http_bytemark_mysql_ingest_committed);
        return;
    }

    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_UPSERT];

    ngx_http_bytemark_mysql_bind_upsert(conn, &ingest->passes[conn->pass]);

    if (mysql_stmt_bind_param(stmt, conn->param) != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, call,
                                                           "upsert"));
        return;
    }

    ngx_http_bytemark_mysql_execute(conn, stmt,
                                    ngx_http_bytemark_mysql_ingest_upserted);
}


static void
ngx_http_bytemark_mysql_ingest_upserted(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT                       *stmt;
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_ingest_pass_t  *p;

    call = conn->call;
    p = &ngx_http_bytemark_call_ingest(call)->passes[conn->pass];
    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_UPSERT];

    if (conn->ret_int != 0) {
        if (ngx_http_bytemark_mysql_refused(stmt, call, p) == NGX_OK) {
            conn->end(conn, NGX_DONE);
            return;
        }

        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, call,
                                                           "upsert"));
        return;
    }

    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_OWNER];

    ngx_memzero(conn->param, sizeof(MYSQL_BIND));
    conn->param_len[0] = NGX_HTTP_BYTEMARK_UUID_LEN;
    conn->param[0].buffer_type = MYSQL_TYPE_STRING;
    conn->param[0].buffer = p->uuid;
    conn->param[0].length = &conn->param_len[0];

    if (mysql_stmt_bind_param(stmt, conn->param) != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, call,
                                                           "owner check"));
        return;
    }

    ngx_http_bytemark_mysql_execute(conn, stmt,
                                    ngx_http_bytemark_mysql_ingest_owner);
}


static void
ngx_http_bytemark_mysql_ingest_owner(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT  *stmt;

    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_OWNER];

    if (conn->ret_int != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                           "owner check"));
        return;
    }

    ngx_http_bytemark_mysql_store(conn, stmt,
                                  ngx_http_bytemark_mysql_ingest_owned);
}


/* NGX_ABORT when the pass belongs to another user */

static void
ngx_http_bytemark_mysql_ingest_owned(ngx_http_bytemark_mysql_conn_t *conn)
{
    int                        rc;
    ngx_int_t                  erc;
    MYSQL_STMT                *stmt;
    ngx_http_bytemark_call_t  *call;

    call = conn->call;
    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_OWNER];

    rc = mysql_stmt_fetch(stmt);

    erc = (rc == 0) ? NGX_OK
                    : ngx_http_bytemark_mysql_stmt_error(stmt, call,
                                                         "owner check");
    mysql_stmt_free_result(stmt);

    if (erc != NGX_OK) {
        conn->end(conn, erc);
        return;
    }

    if (conn->owner != call->user_id) {
        snprintf(call->error, sizeof(call->error),
                 "pass %.36s belongs to another user",
                 ngx_http_bytemark_call_ingest(call)->passes[conn->pass].uuid);
        conn->end(conn, NGX_ABORT);
        return;
    }

    conn->pass++;

    ngx_http_bytemark_mysql_ingest_next(conn);
}


static void
ngx_http_bytemark_mysql_ingest_committed(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_call_ingest_t  *ingest;

    call = conn->call;
    ingest = ngx_http_bytemark_call_ingest(call);

    if (conn->ret_bool) {
        conn->end(conn, ngx_http_bytemark_mysql_error(conn->mysql, call,
                                                      "commit"));
        return;
    }

    /* the commit time: the cache entry's timestamp is at least this */
    ingest->timestamp = ngx_http_bytemark_now_ms();
    ingest->written = (int64_t) ingest->npasses;

    conn->rc = NGX_OK;

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_autocommit_on,
                                ngx_http_bytemark_mysql_ingest_reset);
}


/*
 * A statement of the ingest failed (rc): an open transaction is rolled back
 * and the connection goes back to autocommit before it is released; one
 * that broke, or whose budget is spent, is closed instead.
 */

static void
ngx_http_bytemark_mysql_ingest_end(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_int_t rc)
{
    ngx_uint_t  open;

    open = (conn->rc == NGX_AGAIN);
    conn->rc = rc;

    if (rc == NGX_DECLINED || conn->cancelled || conn->mysql == NULL) {
        ngx_http_bytemark_mysql_ingest_done(conn, rc, 1);
        return;
    }

    if (!open) {
        ngx_http_bytemark_mysql_ingest_done(conn, rc, 0);
        return;
    }

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_rollback,
                                ngx_http_bytemark_mysql_ingest_rolled_back);
}


/*
 * A failed ROLLBACK may leave the transaction open, and SET autocommit=1
 * would commit it: the connection is closed instead (the server rolls an
 * open transaction back when its connection ends).
 */

static void
ngx_http_bytemark_mysql_ingest_rolled_back(
    ngx_http_bytemark_mysql_conn_t *conn)
{
    if (conn->ret_bool || conn->cancelled) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "bytemark: mysql rollback on server #%ui failed: %s; "
                      "the connection is closed",
                      conn->node->index + 1, mysql_error(conn->mysql));
        ngx_http_bytemark_mysql_ingest_done(conn, conn->rc, 1);
        return;
    }

    ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_autocommit_on,
                                ngx_http_bytemark_mysql_ingest_reset);
}


static void
ngx_http_bytemark_mysql_ingest_reset(ngx_http_bytemark_mysql_conn_t *conn)
{
    /* a connection that cannot go back to autocommit is not reused */
    ngx_http_bytemark_mysql_ingest_done(conn, conn->rc,
                                        conn->ret_bool || conn->cancelled);
}


/* the attempt is over: done, or run again on a fresh connection */

static void
ngx_http_bytemark_mysql_ingest_done(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_int_t rc, ngx_uint_t broken)
{
    ngx_http_bytemark_call_t  *call;

    call = conn->call;

    if (!conn->cancelled) {
        ngx_http_bytemark_breaker_result(call->bmcf,
                                         NGX_HTTP_BYTEMARK_BREAKER_MYSQL,
                                         rc != NGX_DECLINED,
                                         ngx_current_msec - conn->start);

        /* one whose budget was spent counted then, once */
        if (!call->stuck) {
            ngx_http_bytemark_health_result(call->bmcf,
                                            NGX_HTTP_BYTEMARK_BREAKER_MYSQL,
                                            rc != NGX_DECLINED, call->error);
        }
    }

    if ((rc == NGX_AGAIN || rc == NGX_DECLINED)
        && !conn->cancelled
        && ++conn->attempt < NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS
        && (ngx_msec_int_t) (conn->deadline - ngx_current_msec) > 0)
    {
        if (broken && conn->mysql) {
            conn->node->generation++;
            ngx_http_bytemark_mysql_close(conn);
        }

        ngx_http_bytemark_mysql_ingest_try(conn);
        return;
    }

    switch (rc) {

    case NGX_OK:
        call->error[0] = '\0';
        call->result = NGX_HTTP_BYTEMARK_FOUND;
        break;

    case NGX_ABORT:
        call->result = NGX_HTTP_BYTEMARK_CONFLICT;
        break;

    case NGX_DONE:
        call->result = NGX_HTTP_BYTEMARK_REFUSED;
        break;

    default:
        call->result = NGX_HTTP_BYTEMARK_FAILED;

        if (call->error_kind == NGX_HTTP_BYTEMARK_ERR_NONE) {
            call->error_kind = (rc == NGX_DECLINED)
                                      ? NGX_HTTP_BYTEMARK_ERR_CONNECT
                                      : NGX_HTTP_BYTEMARK_ERR_QUERY;
        }

        break;
    }

    ngx_http_bytemark_mysql_release(conn, broken);
    ngx_http_bytemark_call_finish(call);
}


static void
ngx_http_bytemark_mysql_bind_upsert(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_ingest_pass_t *p)
{
    MYSQL_BIND     *param;
    unsigned long  *len;

    param = conn->param;
    len = conn->param_len;

    conn->user_id = conn->call->user_id;
    conn->timestamp = (unsigned long long) p->timestamp;
    conn->version = (unsigned char) p->version;
    conn->free_ticket = (char) p->free_ticket_status;

    ngx_memzero(param, NGX_HTTP_BYTEMARK_MYSQL_PARAMS * sizeof(MYSQL_BIND));

    param[0].buffer_type = MYSQL_TYPE_LONGLONG;
    param[0].buffer = &conn->user_id;
    param[0].is_unsigned = 1;

    len[1] = NGX_HTTP_BYTEMARK_UUID_LEN;
    param[1].buffer_type = MYSQL_TYPE_STRING;
    param[1].buffer = p->uuid;
    param[1].length = &len[1];

    param[2].buffer_type = MYSQL_TYPE_TINY;
    param[2].buffer = &conn->version;
    param[2].is_unsigned = 1;

    len[3] = strlen(p->status);
    param[3].buffer_type = MYSQL_TYPE_STRING;
    param[3].buffer = p->status;
    param[3].length = &len[3];

    param[4].buffer_type = MYSQL_TYPE_TINY;
    param[4].buffer = &conn->free_ticket;

    if (p->payload) {
        len[5] = strlen(p->payload);
        param[5].buffer_type = MYSQL_TYPE_STRING;
        param[5].buffer = p->payload;
        param[5].length = &len[5];

    } else {
        param[5].buffer_type = MYSQL_TYPE_NULL;
    }

    len[6] = strlen(p->payload_hash);
    param[6].buffer_type = MYSQL_TYPE_STRING;
    param[6].buffer = p->payload_hash;
    param[6].length = &len[6];

    param[7].buffer_type = MYSQL_TYPE_LONGLONG;
    param[7].buffer = &conn->timestamp;
    param[7].is_unsigned = 1;
}


/*
 * NGX_OK when the upsert failed because the table refused a value: then
 * call->refused names the field, for a 400 (SPEC 3.3: "naming the field").
 * Only the column name is taken from the server's message, and only when
 * it is one of the pass's fields: the body never carries server text.
 */

static ngx_int_t
ngx_http_bytemark_mysql_refused(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p)
{
    ngx_uint_t                        i;
    const char                       *msg, *why, *field;
    unsigned int                      err;
    ngx_http_bytemark_call_ingest_t  *ingest;

    static const char  *fields[] = {
        "pass_uuid", "status", "version", "free_ticket_status", "payload",
        "payload_hash", "timestamp", "user_id"
    };

    err = mysql_stmt_errno(stmt);

    switch (err) {
    case NGX_HTTP_BYTEMARK_ER_CONSTRAINT_FAILED:
        why = "violates a constraint of the table";
        break;
    case NGX_HTTP_BYTEMARK_ER_DATA_TOO_LONG:
        why = "is too long for the table";
        break;
    case NGX_HTTP_BYTEMARK_ER_WRONG_VALUE:
        why = "has a value the table cannot store";
        break;
    case NGX_HTTP_BYTEMARK_ER_OUT_OF_RANGE:
        why = "is out of the table's range";
        break;
    default:
        return NGX_DECLINED;
    }

    /*
     * "Data too long for column 'status' at row 1", "... for column
     * `portal`.`bytemark_pass`.`status` at row 1", "CONSTRAINT `payload`
     * failed for ...": the last quoted name before " at row" / " failed"
     */
    msg = mysql_stmt_error(stmt);
    field = NULL;

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (ngx_http_bytemark_mysql_names(msg, fields[i])) {
            field = fields[i];
            break;
        }
    }

    snprintf(call->error, sizeof(call->error), "upsert of pass %.36s: %s (%u)",
             p->uuid, msg, err);

    ingest = ngx_http_bytemark_call_ingest(call);

    if (field) {
        snprintf(ingest->refused, sizeof(ingest->refused),
                 "pass %.36s: \"%s\" %s", p->uuid, field, why);
    } else {
        snprintf(ingest->refused, sizeof(ingest->refused),
                 "pass %.36s: a value %s", p->uuid, why);
    }

    return NGX_OK;
}


/* the message quotes the name as 'name' or `name` */

static ngx_uint_t
ngx_http_bytemark_mysql_names(const char *msg, const char *name)
{
    size_t       n;
    const char  *s;

    n = strlen(name);

    for (s = strstr(msg, name); s; s = strstr(s + 1, name)) {
        if (s > msg
            && (s[-1] == '\'' || s[-1] == '`')
            && s[n] == s[-1])
        {
            return 1;
        }
    }

    return 0;
}
