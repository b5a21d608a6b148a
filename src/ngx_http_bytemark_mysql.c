
/*
 * MySQL (MariaDB Connector/C): a per-worker pool of connections to each
 * configured server, shared by the pool threads under a mutex, with the
 * prepared statements of each connection kept for its whole life.
 *
 * A connection is used by one thread at a time.  A thread that finds every
 * connection of a server busy waits on a condition variable, bounded by the
 * call's budget, and never opens more than pool_size connections.  Reads go
 * to the first server that answers (the primary, then the replicas in
 * order); a connection that broke is closed and, once, replaced at once.
 */


#include "ngx_http_bytemark_module.h"

#include <pthread.h>
#include <mysql.h>
#include <errmsg.h>


#define NGX_HTTP_BYTEMARK_SQL_TICKETS  0
#define NGX_HTTP_BYTEMARK_SQL_PASS     1
#define NGX_HTTP_BYTEMARK_SQL_UPSERT   2
#define NGX_HTTP_BYTEMARK_SQL_OWNER    3
#define NGX_HTTP_BYTEMARK_SQL_N        4

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

/*
 * A connection idle this long is closed rather than reused: servers and
 * middleboxes drop idle connections, and a reconnect is cheaper than a
 * failed query.
 */
#define NGX_HTTP_BYTEMARK_MYSQL_IDLE_MS  60000

/* deadlock, lock wait timeout: the transaction may simply be run again */
#define NGX_HTTP_BYTEMARK_ER_LOCK_WAIT_TIMEOUT  1205
#define NGX_HTTP_BYTEMARK_ER_LOCK_DEADLOCK      1213
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

/* selected columns, in this order */
#define NGX_HTTP_BYTEMARK_COL_UUID     0
#define NGX_HTTP_BYTEMARK_COL_VERSION  1
#define NGX_HTTP_BYTEMARK_COL_STATUS   2
#define NGX_HTTP_BYTEMARK_COL_FREE     3
#define NGX_HTTP_BYTEMARK_COL_PAYLOAD  4
#define NGX_HTTP_BYTEMARK_COL_HASH     5
#define NGX_HTTP_BYTEMARK_COL_TS       6
#define NGX_HTTP_BYTEMARK_COLS         7


typedef struct ngx_http_bytemark_mysql_node_s  ngx_http_bytemark_mysql_node_t;

typedef struct {
    MYSQL                            *mysql;
    MYSQL_STMT                       *stmt[NGX_HTTP_BYTEMARK_SQL_N];
    ngx_http_bytemark_mysql_node_t   *node;
    int64_t                           used;     /* ms, last release */
    ngx_uint_t                        generation;
    unsigned                          busy:1;
} ngx_http_bytemark_mysql_conn_t;


/*
 * One server.  When one of its connections breaks, the others opened before
 * it most likely broke too (a restart): the generation goes up, and older
 * connections are replaced before use instead of failing a query each.
 */
struct ngx_http_bytemark_mysql_node_s {
    ngx_http_bytemark_mysql_server_t *conf;
    ngx_http_bytemark_mysql_conn_t   *conns;
    ngx_uint_t                        generation;
};


struct ngx_http_bytemark_mysql_pool_s {
    pthread_mutex_t                   mutex;
    pthread_cond_t                    cond;
    ngx_http_bytemark_mysql_node_t   *nodes;
    ngx_uint_t                        nnodes;
    unsigned int                      connect_timeout;   /* seconds */
    unsigned int                      io_timeout;        /* seconds */
    char                             *sql[NGX_HTTP_BYTEMARK_SQL_N];
};


/* one row, fetched as strings: the library converts numbers for us */
typedef struct {
    MYSQL_BIND                        bind[NGX_HTTP_BYTEMARK_COLS];
    unsigned long                     length[NGX_HTTP_BYTEMARK_COLS];
    my_bool                           is_null[NGX_HTTP_BYTEMARK_COLS];
    char                             *buf[NGX_HTTP_BYTEMARK_COLS];
} ngx_http_bytemark_mysql_row_t;


typedef ngx_int_t (*ngx_http_bytemark_mysql_query_pt)(
    ngx_http_bytemark_call_t *call, MYSQL_STMT *stmt);


static char *ngx_http_bytemark_mysql_sql(ngx_cycle_t *cycle, ngx_str_t *table,
    const char *head, const char *tail);
static void ngx_http_bytemark_mysql_read(ngx_http_bytemark_call_t *call,
    ngx_uint_t sql, ngx_http_bytemark_mysql_query_pt query);
static ngx_http_bytemark_mysql_conn_t *ngx_http_bytemark_mysql_acquire(
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_node_t *node,
    int64_t deadline, ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_mysql_release(
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t broken);
static ngx_int_t ngx_http_bytemark_mysql_connect(
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_node_t *node,
    ngx_http_bytemark_mysql_conn_t *conn, ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_mysql_close(ngx_http_bytemark_mysql_conn_t *conn);
static MYSQL_STMT *ngx_http_bytemark_mysql_stmt(
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql, ngx_http_bytemark_call_t *call);
static ngx_int_t ngx_http_bytemark_mysql_tickets_query(
    ngx_http_bytemark_call_t *call, MYSQL_STMT *stmt);
static ngx_int_t ngx_http_bytemark_mysql_pass_query(
    ngx_http_bytemark_call_t *call, MYSQL_STMT *stmt);
static ngx_int_t ngx_http_bytemark_mysql_execute(MYSQL_STMT *stmt,
    ngx_http_bytemark_mysql_row_t *row, ngx_http_bytemark_call_t *call);
static void ngx_http_bytemark_mysql_row_free(ngx_http_bytemark_mysql_row_t *row);
static ngx_int_t ngx_http_bytemark_mysql_pass_object(
    ngx_http_bytemark_mysql_row_t *row, ngx_http_bytemark_answer_t *a);
static ngx_int_t ngx_http_bytemark_mysql_stmt_error(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, const char *what);
static ngx_uint_t ngx_http_bytemark_mysql_gone(unsigned int err);
static ngx_int_t ngx_http_bytemark_mysql_refused(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p);
static ngx_uint_t ngx_http_bytemark_mysql_names(const char *msg,
    const char *name);
static ngx_int_t ngx_http_bytemark_mysql_ingest_tx(
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call);
static ngx_int_t ngx_http_bytemark_mysql_upsert(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p);
static ngx_int_t ngx_http_bytemark_mysql_owner(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, ngx_http_bytemark_ingest_pass_t *p);
static ngx_int_t ngx_http_bytemark_mysql_error(MYSQL *m,
    ngx_http_bytemark_call_t *call, const char *what);
static ngx_uint_t ngx_http_bytemark_mysql_breaker(
    ngx_http_bytemark_call_t *call, ngx_uint_t i);


ngx_int_t
ngx_http_bytemark_mysql_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_uint_t                         i, k;
    ngx_msec_t                         budget;
    ngx_http_bytemark_mysql_pool_t    *pool;
    ngx_http_bytemark_mysql_server_t  *srv;

    if (mysql_library_init(0, NULL, NULL) != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: mysql_library_init() failed");
        return NGX_ERROR;
    }

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_mysql_pool_t));
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (pthread_mutex_init(&pool->mutex, NULL) != 0
        || pthread_cond_init(&pool->cond, NULL) != 0)
    {
        return NGX_ERROR;
    }

    srv = bmcf->mysql_servers->elts;
    pool->nnodes = bmcf->mysql_servers->nelts;

    pool->nodes = ngx_pcalloc(cycle->pool,
                      pool->nnodes * sizeof(ngx_http_bytemark_mysql_node_t));
    if (pool->nodes == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < pool->nnodes; i++) {
        pool->nodes[i].conf = &srv[i];
        pool->nodes[i].conns = ngx_pcalloc(cycle->pool,
                     srv[i].pool_size * sizeof(ngx_http_bytemark_mysql_conn_t));
        if (pool->nodes[i].conns == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < srv[i].pool_size; k++) {
            pool->nodes[i].conns[k].node = &pool->nodes[i];
        }
    }

    /*
     * The library counts its timeouts in whole seconds; they bound a thread
     * that outlives its request, so they follow the http-level budget.
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
    ngx_uint_t                       i, k;
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = bmcf->mysql;
    if (pool == NULL) {
        return;
    }

    bmcf->mysql = NULL;

    for (i = 0; i < pool->nnodes; i++) {
        for (k = 0; k < pool->nodes[i].conf->pool_size; k++) {
            ngx_http_bytemark_mysql_close(&pool->nodes[i].conns[k]);
        }
    }

    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->mutex);

    mysql_library_end();
}


/* thread: all of a user's passes */

void
ngx_http_bytemark_mysql_tickets(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_read(call, NGX_HTTP_BYTEMARK_SQL_TICKETS,
                                 ngx_http_bytemark_mysql_tickets_query);
}


/* thread: one pass, scoped to its user */

void
ngx_http_bytemark_mysql_pass(ngx_http_bytemark_call_t *call)
{
    ngx_http_bytemark_mysql_read(call, NGX_HTTP_BYTEMARK_SQL_PASS,
                                 ngx_http_bytemark_mysql_pass_query);
}


/*
 * A read on one server, call->slot's (the event loop picks the server and
 * moves on to the next one when this fails: ngx_http_bytemark_lookup.c).
 * NGX_DECLINED from a query means the connection broke: a connection that
 * had been idle in the pool may have been closed by the server, so it is
 * replaced and the query retried once, if the budget allows.
 */

static void
ngx_http_bytemark_mysql_read(ngx_http_bytemark_call_t *call, ngx_uint_t sql,
    ngx_http_bytemark_mysql_query_pt query)
{
    int64_t                          deadline, start;
    ngx_int_t                        rc;
    ngx_uint_t                       i, attempt;
    MYSQL_STMT                      *stmt;
    ngx_http_bytemark_mysql_conn_t  *conn;
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = call->bmcf->mysql;
    i = call->slot - NGX_HTTP_BYTEMARK_BREAKER_MYSQL;
    start = ngx_http_bytemark_now_ms();
    deadline = start + (int64_t) call->timeout;

    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

    for (attempt = 0;
         attempt < 2 && (attempt == 0 || ngx_http_bytemark_now_ms() < deadline);
         attempt++)
    {
        conn = ngx_http_bytemark_mysql_acquire(pool, &pool->nodes[i],
                                               deadline, call);
        if (conn == NULL) {
            break;
        }

        stmt = ngx_http_bytemark_mysql_stmt(pool, conn, sql, call);

        rc = (stmt == NULL) ? NGX_DECLINED : query(call, stmt);

        ngx_http_bytemark_mysql_release(pool, conn, rc == NGX_DECLINED);

        if (rc == NGX_OK || rc == NGX_ERROR) {
            /* the server answered (an SQL error: a replica would say it too) */
            ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 1, 0);

            if (rc == NGX_OK) {
                call->error[0] = '\0';
            }

            return;
        }
    }

    /* could not connect, or the connection broke: the server's fault, but
     * a busy pool is not */
    if (call->answer.error_kind != NGX_HTTP_BYTEMARK_ERR_TIMEOUT) {
        ngx_http_bytemark_breaker_result(call->bmcf, call->slot, 0,
                                         ngx_http_bytemark_now_ms() - start);
    }

    if (call->answer.error_kind == NGX_HTTP_BYTEMARK_ERR_NONE) {
        call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
    }
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


static ngx_http_bytemark_mysql_conn_t *
ngx_http_bytemark_mysql_acquire(ngx_http_bytemark_mysql_pool_t *pool,
    ngx_http_bytemark_mysql_node_t *node, int64_t deadline,
    ngx_http_bytemark_call_t *call)
{
    int64_t                          now;
    ngx_uint_t                       i;
    struct timespec                  ts;
    ngx_http_bytemark_mysql_conn_t  *conn, *fresh;

    pthread_mutex_lock(&pool->mutex);

    for ( ;; ) {
        conn = NULL;
        fresh = NULL;

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

        if (conn) {
            conn->busy = 1;
            ngx_http_bytemark_metrics_mysql_acquire(conn->mysql != NULL);
            break;
        }

        now = ngx_http_bytemark_now_ms();

        if (now >= deadline) {
            pthread_mutex_unlock(&pool->mutex);
            snprintf(call->error, sizeof(call->error),
                     "all %u connections to mysql server #%u are busy",
                     (unsigned) node->conf->pool_size,
                     (unsigned) (node - pool->nodes) + 1);
            call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_TIMEOUT;
            return NULL;
        }

        ts.tv_sec = deadline / 1000;
        ts.tv_nsec = (deadline % 1000) * 1000000;
        pthread_cond_timedwait(&pool->cond, &pool->mutex, &ts);
    }

    pthread_mutex_unlock(&pool->mutex);

    if (conn->mysql
        && (conn->generation != node->generation
            || ngx_http_bytemark_now_ms() - conn->used
               > NGX_HTTP_BYTEMARK_MYSQL_IDLE_MS))
    {
        ngx_http_bytemark_mysql_close(conn);
    }

    /* connect outside the lock: it may take the whole connect timeout */
    if (conn->mysql == NULL
        && ngx_http_bytemark_mysql_connect(pool, node, conn, call) != NGX_OK)
    {
        call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_CONNECT;
        ngx_http_bytemark_mysql_release(pool, conn, 1);
        return NULL;
    }

    /* a failure from here on is the query's, not an earlier server's */
    call->answer.error_kind = NGX_HTTP_BYTEMARK_ERR_NONE;

    return conn;
}


static void
ngx_http_bytemark_mysql_release(ngx_http_bytemark_mysql_pool_t *pool,
    ngx_http_bytemark_mysql_conn_t *conn, ngx_uint_t broken)
{
    if (broken) {
        ngx_http_bytemark_mysql_close(conn);
    }

    ngx_http_bytemark_metrics_mysql_release(conn->mysql != NULL);

    conn->used = ngx_http_bytemark_now_ms();

    pthread_mutex_lock(&pool->mutex);

    if (broken && conn->generation == conn->node->generation) {
        conn->node->generation++;
    }

    conn->busy = 0;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->mutex);
}


static ngx_int_t
ngx_http_bytemark_mysql_connect(ngx_http_bytemark_mysql_pool_t *pool,
    ngx_http_bytemark_mysql_node_t *node, ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call)
{
    MYSQL                             *m;
    my_bool                            off;
    ngx_http_bytemark_mysql_server_t  *srv;

    srv = node->conf;

    m = mysql_init(NULL);
    if (m == NULL) {
        snprintf(call->error, sizeof(call->error), "mysql_init() failed");
        return NGX_ERROR;
    }

    off = 0;

    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &pool->connect_timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &pool->io_timeout);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &pool->io_timeout);
    mysql_options(m, MYSQL_OPT_RECONNECT, &off);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");

    /* no gap locks: concurrent ingests of new passes do not deadlock */
    mysql_options(m, MYSQL_INIT_COMMAND,
                  "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");

    /* directive values are NUL-terminated strings from the config parser */
    if (mysql_real_connect(m,
            srv->host.len ? (char *) srv->host.data : NULL,
            (char *) srv->user.data,
            srv->password.len ? (char *) srv->password.data : NULL,
            (char *) srv->database.data,
            (unsigned int) srv->port,
            srv->socket.len ? (char *) srv->socket.data : NULL,
            0)
        == NULL)
    {
        snprintf(call->error, sizeof(call->error),
                 "cannot connect to mysql server #%u: %s",
                 (unsigned) (node - pool->nodes) + 1, mysql_error(m));
        mysql_close(m);
        return NGX_ERROR;
    }

    conn->mysql = m;
    conn->generation = node->generation;

    return NGX_OK;
}


static void
ngx_http_bytemark_mysql_close(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_BYTEMARK_SQL_N; i++) {
        if (conn->stmt[i]) {
            mysql_stmt_close(conn->stmt[i]);
            conn->stmt[i] = NULL;
        }
    }

    if (conn->mysql) {
        mysql_close(conn->mysql);
        conn->mysql = NULL;
    }
}


/* prepared once per connection, kept until the connection closes */

static MYSQL_STMT *
ngx_http_bytemark_mysql_stmt(ngx_http_bytemark_mysql_pool_t *pool,
    ngx_http_bytemark_mysql_conn_t *conn, ngx_uint_t sql,
    ngx_http_bytemark_call_t *call)
{
    my_bool      on;
    MYSQL_STMT  *stmt;

    if (conn->stmt[sql]) {
        return conn->stmt[sql];
    }

    stmt = mysql_stmt_init(conn->mysql);
    if (stmt == NULL) {
        snprintf(call->error, sizeof(call->error), "mysql_stmt_init(): %s",
                 mysql_error(conn->mysql));
        return NULL;
    }

    if (mysql_stmt_prepare(stmt, pool->sql[sql], strlen(pool->sql[sql]))
        != 0)
    {
        snprintf(call->error, sizeof(call->error), "prepare: %s",
                 mysql_stmt_error(stmt));
        mysql_stmt_close(stmt);
        return NULL;
    }

    /* lets us size the result buffers from the stored result */
    on = 1;
    mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &on);

    conn->stmt[sql] = stmt;

    return stmt;
}


static ngx_int_t
ngx_http_bytemark_mysql_tickets_query(ngx_http_bytemark_call_t *call,
    MYSQL_STMT *stmt)
{
    int                             rc;
    MYSQL_BIND                      param;
    ngx_int_t                       erc;
    unsigned long long              user_id;
    ngx_http_bytemark_mysql_row_t   row;

    user_id = call->user_id;

    ngx_memzero(&param, sizeof(MYSQL_BIND));
    param.buffer_type = MYSQL_TYPE_LONGLONG;
    param.buffer = &user_id;
    param.is_unsigned = 1;

    if (mysql_stmt_bind_param(stmt, &param) != 0) {
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "bind");
    }

    /* the entry's timestamp is when the read began (SPEC 3.1 step 3) */
    call->answer.timestamp = ngx_http_bytemark_now_ms();

    erc = ngx_http_bytemark_mysql_execute(stmt, &row, call);
    if (erc != NGX_OK) {
        return erc;
    }

    while ((rc = mysql_stmt_fetch(stmt)) == 0) {
        if (ngx_http_bytemark_mysql_pass_object(&row, &call->answer)
            != NGX_OK)
        {
            snprintf(call->error, sizeof(call->error),
                     "out of memory building passes");
            rc = -1;
            break;
        }
    }

    if (rc != MYSQL_NO_DATA
        || ngx_http_bytemark_passes_close(&call->answer.passes[0]) != NGX_OK
        || ngx_http_bytemark_passes_close(&call->answer.passes[1]) != NGX_OK)
    {
        ngx_http_bytemark_answer_release(&call->answer);
        erc = call->error[0] ? NGX_ERROR
              : ngx_http_bytemark_mysql_stmt_error(stmt, call, "fetch");
        mysql_stmt_free_result(stmt);
        ngx_http_bytemark_mysql_row_free(&row);
        return erc;
    }

    mysql_stmt_free_result(stmt);
    ngx_http_bytemark_mysql_row_free(&row);

    call->answer.has_timestamp = 1;
    call->answer.result = NGX_HTTP_BYTEMARK_FOUND;

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_mysql_pass_query(ngx_http_bytemark_call_t *call,
    MYSQL_STMT *stmt)
{
    int                             rc;
    MYSQL_BIND                      param[2];
    ngx_int_t                       erc;
    unsigned long                   uuid_len;
    unsigned long long              user_id;
    ngx_http_bytemark_mysql_row_t   row;

    user_id = call->user_id;
    uuid_len = NGX_HTTP_BYTEMARK_UUID_LEN;

    ngx_memzero(param, sizeof(param));
    param[0].buffer_type = MYSQL_TYPE_STRING;
    param[0].buffer = call->uuid;
    param[0].buffer_length = uuid_len;
    param[0].length = &uuid_len;
    param[1].buffer_type = MYSQL_TYPE_LONGLONG;
    param[1].buffer = &user_id;
    param[1].is_unsigned = 1;

    if (mysql_stmt_bind_param(stmt, param) != 0) {
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "bind");
    }

    erc = ngx_http_bytemark_mysql_execute(stmt, &row, call);
    if (erc != NGX_OK) {
        return erc;
    }

    rc = mysql_stmt_fetch(stmt);

    if (rc == 0) {
        if (ngx_http_bytemark_mysql_pass_object(&row, &call->answer) == NGX_OK
            && ngx_http_bytemark_passes_close(&call->answer.passes[0])
               == NGX_OK
            && ngx_http_bytemark_passes_close(&call->answer.passes[1])
               == NGX_OK)
        {
            call->answer.result = NGX_HTTP_BYTEMARK_FOUND;

        } else {
            ngx_http_bytemark_answer_release(&call->answer);
            snprintf(call->error, sizeof(call->error),
                     "out of memory building the pass");
            call->answer.result = NGX_HTTP_BYTEMARK_FAILED;
        }

    } else if (rc == MYSQL_NO_DATA) {
        call->answer.result = NGX_HTTP_BYTEMARK_NOT_FOUND;

    } else {
        erc = ngx_http_bytemark_mysql_stmt_error(stmt, call, "fetch");
    }

    mysql_stmt_free_result(stmt);
    ngx_http_bytemark_mysql_row_free(&row);

    return erc;
}


/*
 * Executes a bound statement, stores its result and binds a row of string
 * buffers sized by the longest value of each column.
 */

static ngx_int_t
ngx_http_bytemark_mysql_execute(MYSQL_STMT *stmt,
    ngx_http_bytemark_mysql_row_t *row, ngx_http_bytemark_call_t *call)
{
    size_t        size;
    ngx_uint_t    i;
    MYSQL_RES    *meta;
    MYSQL_FIELD  *fields;

    ngx_memzero(row, sizeof(ngx_http_bytemark_mysql_row_t));

    if (mysql_stmt_execute(stmt) != 0) {
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "execute");
    }

    if (mysql_stmt_store_result(stmt) != 0) {
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "store result");
    }

    meta = mysql_stmt_result_metadata(stmt);
    if (meta == NULL || mysql_num_fields(meta) != NGX_HTTP_BYTEMARK_COLS) {
        snprintf(call->error, sizeof(call->error),
                 "unexpected result shape from the pass table");
        if (meta) {
            mysql_free_result(meta);
        }
        mysql_stmt_free_result(stmt);
        return NGX_ERROR;
    }

    fields = mysql_fetch_fields(meta);

    for (i = 0; i < NGX_HTTP_BYTEMARK_COLS; i++) {
        /* numbers are converted to text: leave room whatever max_length says */
        size = ngx_max(fields[i].max_length, 32) + 1;

        row->buf[i] = malloc(size);
        if (row->buf[i] == NULL) {
            mysql_free_result(meta);
            mysql_stmt_free_result(stmt);
            ngx_http_bytemark_mysql_row_free(row);
            snprintf(call->error, sizeof(call->error), "out of memory");
            return NGX_ERROR;
        }

        row->bind[i].buffer_type = MYSQL_TYPE_STRING;
        row->bind[i].buffer = row->buf[i];
        row->bind[i].buffer_length = size;
        row->bind[i].length = &row->length[i];
        row->bind[i].is_null = &row->is_null[i];
    }

    mysql_free_result(meta);

    if (mysql_stmt_bind_result(stmt, row->bind) != 0) {
        mysql_stmt_free_result(stmt);
        ngx_http_bytemark_mysql_row_free(row);
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "bind result");
    }

    return NGX_OK;
}


static void
ngx_http_bytemark_mysql_row_free(ngx_http_bytemark_mysql_row_t *row)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_BYTEMARK_COLS; i++) {
        free(row->buf[i]);
        row->buf[i] = NULL;
    }
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


/* NGX_DECLINED when the connection is gone, NGX_ERROR otherwise */

static ngx_int_t
ngx_http_bytemark_mysql_stmt_error(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, const char *what)
{
    unsigned int  err;

    err = mysql_stmt_errno(stmt);

    snprintf(call->error, sizeof(call->error), "%s: %s (%u)", what,
             mysql_stmt_error(stmt), err);

    if (err == NGX_HTTP_BYTEMARK_ER_LOCK_DEADLOCK
        || err == NGX_HTTP_BYTEMARK_ER_LOCK_WAIT_TIMEOUT)
    {
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


/*
 * thread: an ingest, in one transaction on the primary (writes never go to
 * a replica).  The upsert is idempotent, so a transaction that met a
 * deadlock or lost its connection (even during COMMIT) is simply run again.
 */

void
ngx_http_bytemark_mysql_ingest(ngx_http_bytemark_call_t *call)
{
    int64_t                          deadline, start;
    ngx_int_t                        rc;
    ngx_uint_t                       attempt;
    ngx_http_bytemark_mysql_conn_t  *conn;
    ngx_http_bytemark_mysql_pool_t  *pool;

    pool = call->bmcf->mysql;
    deadline = ngx_http_bytemark_now_ms() + (int64_t) call->timeout;

    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

    if (!ngx_http_bytemark_mysql_breaker(call, 0)) {
        return;
    }

    for (attempt = 0; attempt < NGX_HTTP_BYTEMARK_INGEST_ATTEMPTS; attempt++) {

        start = ngx_http_bytemark_now_ms();

        conn = ngx_http_bytemark_mysql_acquire(pool, &pool->nodes[0],
                                               deadline, call);
        if (conn == NULL) {
            if (call->answer.error_kind != NGX_HTTP_BYTEMARK_ERR_TIMEOUT) {
                ngx_http_bytemark_breaker_result(call->bmcf,
                                         NGX_HTTP_BYTEMARK_BREAKER_MYSQL, 0,
                                         ngx_http_bytemark_now_ms() - start);
            }

            return;
        }

        rc = ngx_http_bytemark_mysql_ingest_tx(pool, conn, call);

        ngx_http_bytemark_mysql_release(pool, conn, rc == NGX_DECLINED);

        ngx_http_bytemark_breaker_result(call->bmcf,
                                         NGX_HTTP_BYTEMARK_BREAKER_MYSQL,
                                         rc != NGX_DECLINED,
                                         ngx_http_bytemark_now_ms() - start);

        switch (rc) {

        case NGX_OK:
            call->error[0] = '\0';
            call->answer.result = NGX_HTTP_BYTEMARK_FOUND;
            return;

        case NGX_ABORT:
            call->answer.result = NGX_HTTP_BYTEMARK_CONFLICT;
            return;

        case NGX_DONE:
            call->answer.result = NGX_HTTP_BYTEMARK_REFUSED;
            return;

        case NGX_ERROR:
            return;

        default:
            /* NGX_AGAIN, NGX_DECLINED: run it again */
            break;
        }
    }
}


/*
 * NGX_OK: committed; NGX_ABORT: a uuid of another user, rolled back;
 * NGX_DONE: the table refused a value, rolled back; NGX_AGAIN: deadlock,
 * rolled back; NGX_DECLINED: connection lost; NGX_ERROR: anything else.
 */

static ngx_int_t
ngx_http_bytemark_mysql_ingest_tx(ngx_http_bytemark_mysql_pool_t *pool,
    ngx_http_bytemark_mysql_conn_t *conn, ngx_http_bytemark_call_t *call)
{
    MYSQL       *m;
    ngx_int_t    rc;
    ngx_uint_t   i;
    MYSQL_STMT  *upsert, *owner;

    m = conn->mysql;

    upsert = ngx_http_bytemark_mysql_stmt(pool, conn,
                                          NGX_HTTP_BYTEMARK_SQL_UPSERT, call);
    owner = ngx_http_bytemark_mysql_stmt(pool, conn,
                                         NGX_HTTP_BYTEMARK_SQL_OWNER, call);
    if (upsert == NULL || owner == NULL) {
        return NGX_DECLINED;
    }

    if (mysql_autocommit(m, 0) != 0) {
        return ngx_http_bytemark_mysql_error(m, call, "start transaction");
    }

    rc = NGX_OK;

    for (i = 0; i < call->npasses && rc == NGX_OK; i++) {
        rc = ngx_http_bytemark_mysql_upsert(upsert, call, &call->passes[i]);

        if (rc == NGX_OK) {
            rc = ngx_http_bytemark_mysql_owner(owner, call, &call->passes[i]);
        }
    }

    if (rc == NGX_OK && mysql_commit(m) != 0) {
        rc = ngx_http_bytemark_mysql_error(m, call, "commit");
    }

    if (rc == NGX_OK) {
        /* the commit time: the cache entry's timestamp is at least this */
        call->answer.timestamp = ngx_http_bytemark_now_ms();
        call->answer.count = (int64_t) call->npasses;

    } else if (rc != NGX_DECLINED) {
        (void) mysql_rollback(m);
    }

    if (rc != NGX_DECLINED && mysql_autocommit(m, 1) != 0) {
        /* a connection that cannot go back to autocommit is not reused */
        return rc == NGX_OK ? NGX_OK : NGX_DECLINED;
    }

    return rc;
}


static ngx_int_t
ngx_http_bytemark_mysql_upsert(MYSQL_STMT *stmt, ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_ingest_pass_t *p)
{
    char                 free_ticket;
    unsigned char        version;
    MYSQL_BIND           param[8];
    unsigned long        len[8];
    unsigned long long   user_id, timestamp;

    user_id = call->user_id;
    timestamp = (unsigned long long) p->timestamp;
    version = (unsigned char) p->version;
    free_ticket = (char) p->free_ticket_status;

    ngx_memzero(param, sizeof(param));

    param[0].buffer_type = MYSQL_TYPE_LONGLONG;
    param[0].buffer = &user_id;
    param[0].is_unsigned = 1;

    len[1] = NGX_HTTP_BYTEMARK_UUID_LEN;
    param[1].buffer_type = MYSQL_TYPE_STRING;
    param[1].buffer = p->uuid;
    param[1].length = &len[1];

    param[2].buffer_type = MYSQL_TYPE_TINY;
    param[2].buffer = &version;
    param[2].is_unsigned = 1;

    len[3] = strlen(p->status);
    param[3].buffer_type = MYSQL_TYPE_STRING;
    param[3].buffer = p->status;
    param[3].length = &len[3];

    param[4].buffer_type = MYSQL_TYPE_TINY;
    param[4].buffer = &free_ticket;

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
    param[7].buffer = &timestamp;
    param[7].is_unsigned = 1;

    if (mysql_stmt_bind_param(stmt, param) != 0 || mysql_stmt_execute(stmt))
    {
        if (ngx_http_bytemark_mysql_refused(stmt, call, p) == NGX_OK) {
            return NGX_DONE;
        }

        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "upsert");
    }

    return NGX_OK;
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


/* NGX_ABORT when the pass belongs to another user */

static ngx_int_t
ngx_http_bytemark_mysql_owner(MYSQL_STMT *stmt, ngx_http_bytemark_call_t *call,
    ngx_http_bytemark_ingest_pass_t *p)
{
    int                  rc;
    MYSQL_BIND           param, result;
    unsigned long        len;
    unsigned long long   owner;

    len = NGX_HTTP_BYTEMARK_UUID_LEN;

    ngx_memzero(&param, sizeof(MYSQL_BIND));
    param.buffer_type = MYSQL_TYPE_STRING;
    param.buffer = p->uuid;
    param.length = &len;

    ngx_memzero(&result, sizeof(MYSQL_BIND));
    result.buffer_type = MYSQL_TYPE_LONGLONG;
    result.buffer = &owner;
    result.is_unsigned = 1;

    if (mysql_stmt_bind_param(stmt, &param) != 0
        || mysql_stmt_execute(stmt) != 0
        || mysql_stmt_bind_result(stmt, &result) != 0)
    {
        return ngx_http_bytemark_mysql_stmt_error(stmt, call, "owner check");
    }

    rc = mysql_stmt_fetch(stmt);

    if (rc != 0) {
        ngx_int_t  erc;

        erc = ngx_http_bytemark_mysql_stmt_error(stmt, call, "owner check");
        mysql_stmt_free_result(stmt);
        return erc;
    }

    mysql_stmt_free_result(stmt);

    if (owner != call->user_id) {
        snprintf(call->error, sizeof(call->error),
                 "pass %.36s belongs to another user", p->uuid);
        return NGX_ABORT;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_bytemark_mysql_error(MYSQL *m, ngx_http_bytemark_call_t *call,
    const char *what)
{
    unsigned int  err;

    err = mysql_errno(m);

    snprintf(call->error, sizeof(call->error), "%s: %s (%u)", what,
             mysql_error(m), err);

    if (err == NGX_HTTP_BYTEMARK_ER_LOCK_DEADLOCK
        || err == NGX_HTTP_BYTEMARK_ER_LOCK_WAIT_TIMEOUT)
    {
        return NGX_AGAIN;
    }

    return ngx_http_bytemark_mysql_gone(err) ? NGX_DECLINED : NGX_ERROR;
}
