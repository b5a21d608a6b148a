
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MySQL (MariaDB Connector/C): the statements a call runs, as steps on the
 * event loop (each step starts one non-blocking library call through
 * ngx_http_bytemark_mysql_loop.c, the next step runs when it is over), and
 * the rows they return made into answers; the per-worker start and stop.
 *
 * Reads go to the server the call was given (the event loop moves on to the
 * next one when a read fails: ngx_http_bytemark_lookup.c).  Ingests run in
 * one transaction on the primary (ngx_http_bytemark_mysql_ingest.c).  A
 * connection that broke is closed and, once for a read, a few times for an
 * ingest, replaced at once.
 */


#include "ngx_http_bytemark_mysql_private.h"


/* bytemark_mysql_timeout's default, when no location uses MySQL */
#define NGX_HTTP_BYTEMARK_MYSQL_BUDGET     1000
/* the drivers' limits, at most: seconds */
#define NGX_HTTP_BYTEMARK_MYSQL_LIMIT_MAX  3600

#define NGX_HTTP_BYTEMARK_SELECT                                              \
    "SELECT pass_uuid, version, status, free_ticket_status, payload, "       \
    "payload_hash, timestamp FROM "

/*
 * The upsert never changes a row of another user: every assignment keeps
 * the old value then, and the owner check that follows rolls back.
 */
#define NGX_HTTP_BYTEMARK_KEEP(col)                                           \
    col " = IF(user_id = VALUES(user_id), VALUES(" col "), " col ")"

#define NGX_HTTP_BYTEMARK_UPSERT_TAIL                                         \
    " (user_id, pass_uuid, version, status, free_ticket_status, payload, "   \
    "payload_hash, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "              \
    "ON DUPLICATE KEY UPDATE "                                                \
    NGX_HTTP_BYTEMARK_KEEP("version") ", "                                    \
    NGX_HTTP_BYTEMARK_KEEP("status") ", "                                     \
    NGX_HTTP_BYTEMARK_KEEP("free_ticket_status") ", "                         \
    NGX_HTTP_BYTEMARK_KEEP("payload") ", "                                    \
    NGX_HTTP_BYTEMARK_KEEP("payload_hash") ", "                               \
    NGX_HTTP_BYTEMARK_KEEP("timestamp")


static void ngx_http_bytemark_mysql_read(ngx_http_bytemark_call_t *call,
    ngx_uint_t sql);
static void ngx_http_bytemark_mysql_read_try(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_read_prepare(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_read_execute(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_read_store(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_read_rows(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_read_end(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_int_t rc);


/* a call waits for a connection of its server: the primary's, or call->slot */
static const ngx_http_bytemark_call_ops_t  ngx_http_bytemark_mysql_ops = {
    ngx_http_bytemark_mysql_post,
    NULL,
    NGX_HTTP_BYTEMARK_BREAKER_MYSQL
};


/* per worker: the backends with MySQL servers, each with its own pools */
static ngx_uint_t  ngx_http_bytemark_mysql_backends;


/* the Connector/C loaded ("3.3.20"), not the one built against */

const char *
ngx_http_bytemark_mysql_version(void)
{
    return mysql_get_client_info();
}


ngx_int_t
ngx_http_bytemark_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t                       i;
    ngx_msec_t                       budget;
    ngx_http_bytemark_mysql_pool_t  *pool;

    /* the call layer hands MySQL calls to us, to be driven on the loop */
    ngx_http_bytemark_call_register(NGX_HTTP_BYTEMARK_BACKEND_MYSQL,
                                    &ngx_http_bytemark_mysql_ops);

    if (ngx_http_bytemark_mysql_backends == 0
        && mysql_library_init(0, NULL, NULL) != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: mysql_library_init() failed");
        return NGX_ERROR;
    }

    ngx_http_bytemark_mysql_backends++;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_mysql_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_mysql_pool_init(cycle, bmcf, pool) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_mysql_tls_init(cycle, bmcf, pool) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * The library counts its own timeouts in whole seconds and, driven
     * without blocking, hands each wait's limit to the event loop
     * (MYSQL_WAIT_TIMEOUT): a statement that waits longer than the read
     * timeout (on a row lock, say) fails.  So the limits follow the largest
     * budget of any location that uses MySQL; a call's own budget ends its
     * request earlier, these bound a call whose request has gone.
     */
    budget = bmcf->mysql_budget ? bmcf->mysql_budget
                                : NGX_HTTP_BYTEMARK_MYSQL_BUDGET;
    budget = ngx_min(budget, NGX_HTTP_BYTEMARK_MYSQL_LIMIT_MAX * 1000);

    pool->connect_timeout = (unsigned int) ((budget + 999) / 1000);
    pool->io_timeout = pool->connect_timeout + 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "bytemark: mysql connect timeout %ud s, read/write %ud s",
                   pool->connect_timeout, pool->io_timeout);

    pool->sql[NGX_HTTP_BYTEMARK_SQL_TICKETS] =
        ngx_http_bytemark_mysql_sql(cycle, &bmcf->mysql_table,
                                    NGX_HTTP_BYTEMARK_SELECT,
                                    " WHERE user_id = ? ORDER BY timestamp, id");
    pool->sql[NGX_HTTP_BYTEMARK_SQL_PASS] =
        ngx_http_bytemark_mysql_sql(cycle, &bmcf->mysql_table,
                                    NGX_HTTP_BYTEMARK_SELECT,
                                    " WHERE pass_uuid = ? AND user_id = ?");
    pool->sql[NGX_HTTP_BYTEMARK_SQL_UPSERT] =
        ngx_http_bytemark_mysql_sql(cycle, &bmcf->mysql_table, "INSERT INTO ",
                                    NGX_HTTP_BYTEMARK_UPSERT_TAIL);
    pool->sql[NGX_HTTP_BYTEMARK_SQL_OWNER] =
        ngx_http_bytemark_mysql_sql(cycle, &bmcf->mysql_table,
                                    "SELECT user_id FROM ",
                                    " WHERE pass_uuid = ?");

    for (i = 0; i < NGX_HTTP_BYTEMARK_SQL_N; i++) {
        if (pool->sql[i] == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_bytemark_mysql_batch_init(cycle, bmcf, pool) != NGX_OK) {
        return NGX_ERROR;
    }

    bmcf->mysql = pool;

    return NGX_OK;
}


/* head `table` tail; the table name was checked to be a plain identifier
 * ("db.table" allowed) */

char *
ngx_http_bytemark_mysql_sql(ngx_cycle_t *cycle, ngx_str_t *table,
    const char *head, const char *tail)
{
    u_char  *sql, *p, *dot;
    size_t   len;

    len = ngx_strlen(head) + table->len + 4 + ngx_strlen(tail) + 1;

    sql = ngx_pnalloc(cycle->pool, len);
    if (sql == NULL) {
        return NULL;
    }

    p = ngx_sprintf(sql, "%s`", head);

    dot = ngx_strlchr(table->data, table->data + table->len, '.');

    if (dot) {
        p = ngx_cpymem(p, table->data, dot - table->data);
        p = ngx_cpymem(p, "`.`", 3);
        p = ngx_cpymem(p, dot + 1, table->data + table->len - dot - 1);

    } else {
        p = ngx_cpymem(p, table->data, table->len);
    }

    p = ngx_sprintf(p, "`%s%Z", tail);

    return (char *) sql;
}


void
ngx_http_bytemark_mysql_exit_process(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = bmcf->mysql;
    if (pool == NULL) {
        return;
    }

    bmcf->mysql = NULL;

    ngx_http_bytemark_mysql_pool_done(pool);

    /* the library goes with the last backend's pools */
    if (--ngx_http_bytemark_mysql_backends == 0) {
        mysql_library_end();
    }
}


/* event loop, with a connection: all of a user's passes */

void
ngx_http_bytemark_mysql_tickets(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_read(call, NGX_HTTP_BYTEMARK_SQL_TICKETS);
}


/* event loop, with a connection: one pass, scoped to its user */

void
ngx_http_bytemark_mysql_pass(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_read(call, NGX_HTTP_BYTEMARK_SQL_PASS);
}


static void
ngx_http_bytemark_mysql_read(ngx_http_bytemark_call_t *call, ngx_uint_t sql)
{
    ngx_http_bytemark_mysql_conn_t  *conn;

    conn = call->conn;

    conn->sql = sql;
    conn->end = ngx_http_bytemark_mysql_read_end;

    call->result = NGX_HTTP_BYTEMARK_FAILED;

    ngx_http_bytemark_mysql_read_try(conn);
}


static void
ngx_http_bytemark_mysql_read_try(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_connect(conn, ngx_http_bytemark_mysql_read_prepare);
}


static void
ngx_http_bytemark_mysql_read_prepare(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_prepare(conn, conn->sql,
                                    ngx_http_bytemark_mysql_read_execute);
}


static void
ngx_http_bytemark_mysql_read_execute(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT                       *stmt;
    ngx_http_bytemark_call_t         *call;
    ngx_http_bytemark_call_lookup_t  *lookup;

    call = conn->call;
    lookup = ngx_http_bytemark_call_lookup(call);
    stmt = conn->stmt[conn->sql];

    ngx_memzero(conn->param, 2 * sizeof(MYSQL_BIND));

    conn->user_id = call->user_id;

    if (conn->sql == NGX_HTTP_BYTEMARK_SQL_TICKETS) {
        conn->param[0].buffer_type = MYSQL_TYPE_LONGLONG;
        conn->param[0].buffer = &conn->user_id;
        conn->param[0].is_unsigned = 1;

        /* the entry's timestamp is when the read began (SPEC 3.1 step 3) */
        lookup->answer.timestamp = ngx_http_bytemark_now_ms();

    } else {
        conn->param_len[0] = NGX_HTTP_BYTEMARK_UUID_LEN;
        conn->param[0].buffer_type = MYSQL_TYPE_STRING;
        conn->param[0].buffer = lookup->uuid;
        conn->param[0].buffer_length = NGX_HTTP_BYTEMARK_UUID_LEN;
        conn->param[0].length = &conn->param_len[0];
        conn->param[1].buffer_type = MYSQL_TYPE_LONGLONG;
        conn->param[1].buffer = &conn->user_id;
        conn->param[1].is_unsigned = 1;
    }

    if (mysql_stmt_bind_param(stmt, conn->param) != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, call, "bind"));
        return;
    }

    ngx_http_bytemark_mysql_execute(conn, stmt,
                                    ngx_http_bytemark_mysql_read_store);
}


static void
ngx_http_bytemark_mysql_read_store(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT  *stmt;

    stmt = conn->stmt[conn->sql];

    if (conn->ret_int != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                           "execute"));
        return;
    }

    ngx_http_bytemark_mysql_store(conn, stmt,
                                  ngx_http_bytemark_mysql_read_rows);
}


/* the result is in memory: rows become passes, no more I/O */

static void
ngx_http_bytemark_mysql_read_rows(ngx_http_bytemark_mysql_conn_t *conn)
{
    int                          rc;
    ngx_int_t                    erc;
    MYSQL_STMT                  *stmt;
    ngx_http_bytemark_call_t    *call;
    ngx_http_bytemark_answer_t  *a;

    call = conn->call;
    a = &ngx_http_bytemark_call_lookup(call)->answer;
    stmt = conn->stmt[conn->sql];
    erc = NGX_OK;

    while ((rc = ngx_http_bytemark_mysql_fetch(conn, conn->sql)) == 0) {
        if (ngx_http_bytemark_mysql_pass_object(&conn->row[conn->sql], a)
            != NGX_OK)
        {
            snprintf(call->error, sizeof(call->error),
                     "out of memory building passes");
            erc = NGX_ERROR;
            break;
        }

        if (conn->sql == NGX_HTTP_BYTEMARK_SQL_PASS) {
            break;
        }
    }

    if (erc == NGX_OK && rc != 0 && rc != MYSQL_NO_DATA) {
        erc = ngx_http_bytemark_mysql_stmt_error(stmt, call, "fetch");
    }

    if (erc == NGX_OK
        && (ngx_http_bytemark_passes_close(&a->passes[0]) != NGX_OK
            || ngx_http_bytemark_passes_close(&a->passes[1]) != NGX_OK))
    {
        snprintf(call->error, sizeof(call->error), "out of memory");
        erc = NGX_ERROR;
    }

    mysql_stmt_free_result(stmt);

    if (erc != NGX_OK) {
        ngx_http_bytemark_answer_release(a);
        conn->end(conn, erc);
        return;
    }

    if (conn->sql == NGX_HTTP_BYTEMARK_SQL_TICKETS) {
        a->has_timestamp = 1;
        call->result = NGX_HTTP_BYTEMARK_FOUND;

    } else {
        call->result = (a->passes[0].n + a->passes[1].n)
                       ? NGX_HTTP_BYTEMARK_FOUND
                       : NGX_HTTP_BYTEMARK_NOT_FOUND;
    }

    conn->end(conn, NGX_OK);
}


/*
 * NGX_DECLINED means the connection broke: one that had been idle in the
 * pool may have been closed by the server, so it is replaced and the read
 * run again once, if the budget allows.
 */

static void
ngx_http_bytemark_mysql_read_end(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_int_t rc)
{
    ngx_http_bytemark_call_t  *call;

    call = conn->call;

    if (rc == NGX_DECLINED && conn->attempt == 0 && !conn->cancelled
        && (ngx_msec_int_t) (conn->deadline - ngx_current_msec) > 0)
    {
        conn->attempt++;

        if (conn->mysql) {
            conn->node->generation++;
            ngx_http_bytemark_mysql_close(conn);
        }

        call->error_kind = NGX_HTTP_BYTEMARK_ERR_NONE;
        ngx_http_bytemark_mysql_read_try(conn);
        return;
    }

    ngx_http_bytemark_mysql_outcome(conn, call, rc);

    ngx_http_bytemark_mysql_release(conn, rc == NGX_DECLINED);
    ngx_http_bytemark_call_finish(call);
}


/*
 * A read's outcome for its call, and for its server's breaker: an answer,
 * even an SQL error (a replica would say it too), is the server working;
 * no connection, or one that broke, is its failure.  Shared by a lookup
 * sent alone and by each lookup of a batch.
 */

void
ngx_http_bytemark_mysql_outcome(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call, ngx_int_t rc)
{
    if (rc == NGX_OK || rc == NGX_ERROR || rc == NGX_AGAIN) {
        /* the server answered (an SQL error: a replica would say it too) */
        ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 1, 0);
        ngx_http_bytemark_health_result(call->bmcf, call->slot, 1, NULL);

        if (rc == NGX_OK) {
            call->error[0] = '\0';

        } else {
            /* not the server's failure: no failover, no breaker failure */
            call->result = NGX_HTTP_BYTEMARK_FAILED;
            call->error_kind = NGX_HTTP_BYTEMARK_ERR_QUERY;
        }

    } else {
        /* could not connect, or the connection broke: the server's fault */
        call->result = NGX_HTTP_BYTEMARK_FAILED;

        if (!conn->cancelled) {
            ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 0,
                                             ngx_current_msec - conn->start);

            /* a read whose budget was spent counted then, once */
            if (!call->stuck && call->request) {
                ngx_http_bytemark_health_result(call->bmcf, call->slot, 0,
                                                call->error);
            }
        }

        if (call->error_kind == NGX_HTTP_BYTEMARK_ERR_NONE) {
            call->error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        }
    }
}


/*
 * A row becomes a pass in the array of its version (SPEC 2), and is kept
 * as a row too when a cache fill follows (a->keep_rows).
 */

ngx_int_t
ngx_http_bytemark_mysql_pass_object(ngx_http_bytemark_mysql_row_t *row,
    ngx_http_bytemark_answer_t *a)
{
    ngx_uint_t                    version;
    ngx_http_bytemark_pass_row_t  pass;

#define col(i, s)                                                           \
    (s).data = row->is_null[i] ? NULL : (u_char *) row->buf[i];             \
    (s).len = row->is_null[i] ? 0 : row->length[i]

    /* the numbers are parsed as C strings; every buffer has room for the NUL */
    row->buf[NGX_HTTP_BYTEMARK_COL_VERSION]
            [row->length[NGX_HTTP_BYTEMARK_COL_VERSION]] = '\0';
    row->buf[NGX_HTTP_BYTEMARK_COL_FREE]
            [row->length[NGX_HTTP_BYTEMARK_COL_FREE]] = '\0';
    row->buf[NGX_HTTP_BYTEMARK_COL_TS][row->length[NGX_HTTP_BYTEMARK_COL_TS]] =
        '\0';

    version = (strcmp(row->buf[NGX_HTTP_BYTEMARK_COL_VERSION], "4") == 0)
              ? 4 : 3;

    col(NGX_HTTP_BYTEMARK_COL_UUID, pass.uuid);
    col(NGX_HTTP_BYTEMARK_COL_STATUS, pass.status);
    col(NGX_HTTP_BYTEMARK_COL_PAYLOAD, pass.payload);
    col(NGX_HTTP_BYTEMARK_COL_HASH, pass.hash);

#undef col

    pass.timestamp = strtoll(row->buf[NGX_HTTP_BYTEMARK_COL_TS], NULL, 10);
    pass.free_ticket_status = strtoll(row->buf[NGX_HTTP_BYTEMARK_COL_FREE],
                                      NULL, 10);

    if (ngx_http_bytemark_passes_add_row(&a->passes[version == 4], &pass)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return a->keep_rows ? ngx_http_bytemark_rows_add(&a->rows[version == 4],
                                                     &pass)
                        : NGX_OK;
}


/*
 * is MySQL server #i to be asked?  Not while it is down (max_fails=) or
 * its breaker is open
 */

ngx_uint_t
ngx_http_bytemark_mysql_breaker(ngx_http_bytemark_call_t *call, ngx_uint_t i)
{
    if (ngx_http_bytemark_mysql_server_usable(call->bmcf, i,
                                              NGX_HTTP_BYTEMARK_GATE_PROBE
                                              | NGX_HTTP_BYTEMARK_GATE_NO_STUCK)
        == NGX_OK)
    {
        return 1;
    }

    snprintf(call->error, sizeof(call->error),
             "mysql server #%u is down or its circuit breaker open",
             (unsigned) i + 1);
    call->error_kind = NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN;

    return 0;
}
