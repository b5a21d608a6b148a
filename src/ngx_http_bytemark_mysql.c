
/*
 * MySQL (MariaDB Connector/C): the statements a call runs, as steps on the
 * event loop (each step starts one non-blocking library call through
 * ngx_http_bytemark_mysql_conn.c, the next step runs when it is over), and
 * the rows they return made into answers.
 *
 * Reads go to the server the call was given (the event loop moves on to the
 * next one when a read fails: ngx_http_bytemark_lookup.c).  Ingests run in
 * one transaction on the primary.  A connection that broke is closed and,
 * once for a read, a few times for an ingest, replaced at once.
 */


#include "ngx_http_bytemark_mysql.h"


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


static char *ngx_http_bytemark_mysql_sql(ngx_cycle_t *cycle, ngx_str_t *table,
    const char *head, const char *tail);
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
static ngx_int_t ngx_http_bytemark_mysql_pass_object(
    ngx_http_bytemark_mysql_row_t *row, ngx_http_bytemark_answer_t *a);
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
static ngx_uint_t ngx_http_bytemark_mysql_breaker(
    ngx_http_bytemark_call_t *call, ngx_uint_t i);


ngx_int_t
ngx_http_bytemark_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t                       i;
    ngx_msec_t                       budget;
    ngx_http_bytemark_mysql_pool_t  *pool;

    if (mysql_library_init(0, NULL, NULL) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: mysql_library_init() failed");
        return NGX_ERROR;
    }

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_mysql_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_bytemark_mysql_pool_init(cycle, bmcf, pool) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * The library counts its own timeouts in whole seconds; a call's budget
     * ends it earlier.  They bound a call whose client went away.
     */
    budget = ngx_http_bytemark_http_conf(cycle)->mysql_timeout;

    pool->connect_timeout = (unsigned int) ((budget + 999) / 1000);
    pool->io_timeout = pool->connect_timeout + 1;

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

    bmcf->mysql = pool;

    return NGX_OK;
}


/* head `table` tail; the table name was checked to be a plain identifier
 * ("db.table" allowed) */

static char *
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

    mysql_library_end();
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

    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

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
    MYSQL_STMT                *stmt;
    ngx_http_bytemark_call_t  *call;

    call = conn->call;
    stmt = conn->stmt[conn->sql];

    ngx_memzero(conn->param, 2 * sizeof(MYSQL_BIND));

    conn->user_id = call->user_id;

    if (conn->sql == NGX_HTTP_BYTEMARK_SQL_TICKETS) {
        conn->param[0].buffer_type = MYSQL_TYPE_LONGLONG;
        conn->param[0].buffer = &conn->user_id;
        conn->param[0].is_unsigned = 1;

        /* the entry's timestamp is when the read began (SPEC 3.1 step 3) */
        call->answer.timestamp = ngx_http_bytemark_now_ms();

    } else {
        conn->param_len[0] = NGX_HTTP_BYTEMARK_UUID_LEN;
        conn->param[0].buffer_type = MYSQL_TYPE_STRING;
        conn->param[0].buffer = call->uuid;
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
    a = &call->answer;
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
        a->result = NGX_HTTP_BYTEMARK_FOUND;

    } else {
        a->result = (a->passes[0].n + a->passes[1].n)
                    ? NGX_HTTP_BYTEMARK_FOUND : NGX_HTTP_BYTEMARK_NOT_FOUND;
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

        call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_NONE;
        ngx_http_bytemark_mysql_read_try(conn);
        return;
    }

    if (rc == NGX_OK || rc == NGX_ERROR || rc == NGX_AGAIN) {
        /* the server answered (an SQL error: a replica would say it too) */
        ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 1, 0);

        if (rc == NGX_OK) {
            call->error[0] = '\0';

        } else {
            call->answer.result = NGX_HTTP_BYTEMARK_FAILED;
        }

    } else {
        /* could not connect, or the connection broke: the server's fault */
        call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

        if (!conn->cancelled) {
            ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 0,
                                             ngx_current_msec - conn->start);
        }

        if (call->answer.error_kind == NGX_HTTP_BYTEMARK_ERR_NONE) {
            call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        }
    }

    ngx_http_bytemark_mysql_release(conn, rc == NGX_DECLINED);
    ngx_http_bytemark_call_finish(call);
}


/* a row becomes a pass in the array of its version (SPEC 2) */

static ngx_int_t
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

    return ngx_http_bytemark_passes_add_row(&a->passes[version == 4], &pass);
}


/* is MySQL server #i to be asked?  Not while its breaker is open */

static ngx_uint_t
ngx_http_bytemark_mysql_breaker(ngx_http_bytemark_call_t *call, ngx_uint_t i)
{
    if (ngx_http_bytemark_breaker_allow(call->bmcf,
                                        NGX_HTTP_BYTEMARK_BREAKER_MYSQL + i))
    {
        return 1;
    }

    snprintf(call->error, sizeof(call->error),
             "circuit breaker open for mysql server #%u", (unsigned) i + 1);
    call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_BREAKER_OPEN;

    return 0;
}


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

    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

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
    MYSQL_STMT                *stmt;
    ngx_http_bytemark_call_t  *call;

    call = conn->call;

    if (conn->pass == call->npasses) {
        ngx_http_bytemark_mysql_run(conn, ngx_http_bytemark_mysql_op_commit,
                                    ngx_http_bytemark_mysql_ingest_committed);
        return;
    }

    stmt = conn->stmt[NGX_HTTP_BYTEMARK_SQL_UPSERT];

    ngx_http_bytemark_mysql_bind_upsert(conn, &call->passes[conn->pass]);

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
    p = &call->passes[conn->pass];
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
                 call->passes[conn->pass].uuid);
        conn->end(conn, NGX_ABORT);
        return;
    }

    conn->pass++;

    ngx_http_bytemark_mysql_ingest_next(conn);
}


static void
ngx_http_bytemark_mysql_ingest_committed(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_call_t  *call;

    call = conn->call;

    if (conn->ret_bool) {
        conn->end(conn, ngx_http_bytemark_mysql_error(conn->mysql, call,
                                                      "commit"));
        return;
    }

    /* the commit time: the cache entry's timestamp is at least this */
    call->answer.timestamp = ngx_http_bytemark_now_ms();
    call->answer.count = (int64_t) call->npasses;

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


static void
ngx_http_bytemark_mysql_ingest_rolled_back(
    ngx_http_bytemark_mysql_conn_t *conn)
{
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
        call->answer.result = NGX_HTTP_BYTEMARK_FOUND;
        break;

    case NGX_ABORT:
        call->answer.result = NGX_HTTP_BYTEMARK_CONFLICT;
        break;

    case NGX_DONE:
        call->answer.result = NGX_HTTP_BYTEMARK_REFUSED;
        break;

    default:
        call->answer.result = NGX_HTTP_BYTEMARK_FAILED;
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
    ngx_uint_t     i;
    const char    *msg, *why, *field;
    unsigned int   err;

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

    if (field) {
        snprintf(call->refused, sizeof(call->refused),
                 "pass %.36s: \"%s\" %s", p->uuid, field, why);
    } else {
        snprintf(call->refused, sizeof(call->refused),
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


