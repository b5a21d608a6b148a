
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * MySQL lookups that wait become one query.
 *
 * A worker keeps at most NGX_HTTP_BYTEMARK_MYSQL_INFLIGHT connections of a
 * server reading at a time (mysql_conn.c); lookups that arrive meanwhile
 * wait in the server's queue, and the next free connection takes up to
 * "bytemark_mysql_batch" of them, of one kind, as one prepared
 *
 *     SELECT ..., user_id FROM t WHERE user_id IN (?, ..., ?)
 *         ORDER BY user_id, timestamp, id
 *
 * (pass lookups: WHERE pass_uuid IN (...), each answer scoped to its
 * user).  One statement per kind and size, sizes the powers of two up to
 * the batch, the last key repeated to fill it: a connection prepares each
 * once and keeps it.  A lone lookup runs the one-user statement, as before.
 *
 * The lookups of a batch stay calls of their own: each keeps its budget
 * (one that expires while it waits leaves the queue and never touches a
 * batch; one that expires while its batch runs is answered at once and
 * the batch's connection counts once as stuck), its client, and its
 * failover: a batch that fails fails each of its lookups as one lookup
 * fails, each reports to the breaker, and each goes on to the next server
 * on its own.  Lookups of the same user ask with one key and get the
 * same rows.
 */


#include "ngx_http_bytemark_mysql_private.h"


/*
 * Connections of a server reading at a time before lookups queue (the
 * manual says why two); a build may set another to measure it.
 */
#ifndef NGX_HTTP_BYTEMARK_MYSQL_INFLIGHT
#define NGX_HTTP_BYTEMARK_MYSQL_INFLIGHT  2
#endif

#define NGX_HTTP_BYTEMARK_BATCH_SELECT                                        \
    "SELECT pass_uuid, version, status, free_ticket_status, payload, "       \
    "payload_hash, timestamp, user_id FROM "


static char *ngx_http_bytemark_mysql_batch_sql(ngx_cycle_t *cycle,
    ngx_str_t *table, ngx_uint_t kind, ngx_uint_t size);
static int ngx_http_bytemark_mysql_batch_cmp(const void *a, const void *b);
static void ngx_http_bytemark_mysql_batch_try(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_batch_prepare(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_batch_execute(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_batch_store(
    ngx_http_bytemark_mysql_conn_t *conn);
static void ngx_http_bytemark_mysql_batch_rows(
    ngx_http_bytemark_mysql_conn_t *conn);
static ngx_int_t ngx_http_bytemark_mysql_batch_row(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_http_bytemark_mysql_row_t *row);
static void ngx_http_bytemark_mysql_batch_end(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_int_t rc);


/* init_process, after the pool: the statements and each slot's buffers */

ngx_int_t
ngx_http_bytemark_mysql_batch_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_uint_t  i, k, s, kind;

    pool->batch = bmcf->mysql_batch;
    pool->sizes = 0;

    if (pool->batch > 1) {
        while ((2u << pool->sizes) < pool->batch) {
            pool->sizes++;
        }

        pool->sizes++;
    }

    /* bytemark_mysql_batch 1: every free connection reads, as before */
    pool->inflight = (pool->batch > 1) ? NGX_HTTP_BYTEMARK_MYSQL_INFLIGHT
                                       : NGX_MAX_UINT32_VALUE;

    for (kind = 0; kind < 2; kind++) {
        for (s = 0; s < pool->sizes; s++) {
            i = NGX_HTTP_BYTEMARK_SQL_BATCH
                + kind * NGX_HTTP_BYTEMARK_MYSQL_SIZES + s;

            pool->sql[i] = ngx_http_bytemark_mysql_batch_sql(cycle,
                               &bmcf->mysql_table, kind, 2u << s);
            if (pool->sql[i] == NULL) {
                return NGX_ERROR;
            }
        }
    }

    for (i = 0; i < pool->nnodes; i++) {
        for (k = 0; k < pool->nodes[i].conf->pool_size; k++) {
            if (ngx_http_bytemark_mysql_batch_slot(cycle, pool,
                                                   &pool->nodes[i].conns[k])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static char *
ngx_http_bytemark_mysql_batch_sql(ngx_cycle_t *cycle, ngx_str_t *table,
    ngx_uint_t kind, ngx_uint_t size)
{
    u_char      *tail, *p;
    ngx_uint_t   i;

    tail = ngx_pnalloc(cycle->pool, 3 * size + 80);
    if (tail == NULL) {
        return NULL;
    }

    p = ngx_sprintf(tail, " WHERE %s IN (?", kind ? "pass_uuid" : "user_id");

    for (i = 1; i < size; i++) {
        p = ngx_cpymem(p, ", ?", 3);
    }

    p = ngx_sprintf(p, ")%s%Z",
                    kind ? "" : " ORDER BY user_id, timestamp, id");

    return ngx_http_bytemark_mysql_sql(cycle, table,
                                       NGX_HTTP_BYTEMARK_BATCH_SELECT,
                                       (const char *) tail);
}


ngx_int_t
ngx_http_bytemark_mysql_batch_slot(ngx_cycle_t *cycle,
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_uint_t                        n;
    ngx_http_bytemark_mysql_batch_t  *b;

    b = &conn->batch;

    b->members = ngx_pcalloc(cycle->pool, ngx_max(pool->batch, 1)
                                          * sizeof(ngx_http_bytemark_call_t *));
    if (b->members == NULL) {
        return NGX_ERROR;
    }

    if (pool->sizes == 0) {
        return NGX_OK;
    }

    n = 2u << (pool->sizes - 1);

    b->bind = ngx_pcalloc(cycle->pool, n * sizeof(MYSQL_BIND));
    b->len = ngx_pcalloc(cycle->pool, n * sizeof(unsigned long));
    b->ids = ngx_pcalloc(cycle->pool, n * sizeof(unsigned long long));

    if (b->bind == NULL || b->len == NULL || b->ids == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_bytemark_mysql_is_read(ngx_http_bytemark_call_t *call)
{
    return call->run == ngx_http_bytemark_mysql_tickets
           || call->run == ngx_http_bytemark_mysql_pass;
}


/* event loop, with a connection: the members of conn->batch, n > 1 */

void
ngx_http_bytemark_mysql_batch_read(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_uint_t                        i, keys, kind, s;
    ngx_http_bytemark_call_t        **m;
    ngx_http_bytemark_mysql_batch_t  *b;

    b = &conn->batch;
    m = b->members;
    kind = (m[0]->run == ngx_http_bytemark_mysql_pass);

    /* lookups of one user (one pass) next to each other: one key each */
    ngx_qsort(m, b->nmembers, sizeof(ngx_http_bytemark_call_t *),
              ngx_http_bytemark_mysql_batch_cmp);

    for (i = 0, keys = 0; i < b->nmembers; i++) {
        m[i]->result = NGX_HTTP_BYTEMARK_FAILED;

        if (i == 0 || ngx_http_bytemark_mysql_batch_cmp(&m[i], &m[i - 1])) {
            keys++;
        }
    }

    for (s = 0; (2u << s) < keys; s++) { /* void */ }

    b->size = 2u << s;

    conn->sql = NGX_HTTP_BYTEMARK_SQL_BATCH
                + kind * NGX_HTTP_BYTEMARK_MYSQL_SIZES + s;
    conn->end = ngx_http_bytemark_mysql_batch_end;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql batch of %ui lookups, %ui keys, "
                   "statement of %ui, server #%ui",
                   b->nmembers, keys, b->size, conn->node->index + 1);

    ngx_http_bytemark_mysql_batch_try(conn);
}


/* by user, then (pass lookups) by uuid */

static int
ngx_http_bytemark_mysql_batch_cmp(const void *a, const void *b)
{
    ngx_http_bytemark_call_t  *x, *y;

    x = *(ngx_http_bytemark_call_t **) a;
    y = *(ngx_http_bytemark_call_t **) b;

    if (x->user_id != y->user_id) {
        return (x->user_id > y->user_id) ? 1 : -1;
    }

    if (x->run != ngx_http_bytemark_mysql_pass) {
        return 0;
    }

    return ngx_memcmp(ngx_http_bytemark_call_lookup(x)->uuid,
                      ngx_http_bytemark_call_lookup(y)->uuid,
                      NGX_HTTP_BYTEMARK_UUID_LEN);
}


static void
ngx_http_bytemark_mysql_batch_try(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_connect(conn,
                                    ngx_http_bytemark_mysql_batch_prepare);
}


static void
ngx_http_bytemark_mysql_batch_prepare(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_prepare(conn, conn->sql,
                                    ngx_http_bytemark_mysql_batch_execute);
}


static void
ngx_http_bytemark_mysql_batch_execute(ngx_http_bytemark_mysql_conn_t *conn)
{
    int64_t                           now;
    MYSQL_STMT                       *stmt;
    ngx_uint_t                        i, k, kind;
    ngx_http_bytemark_call_t        **m, *key;
    ngx_http_bytemark_mysql_batch_t  *b;

    b = &conn->batch;
    m = b->members;
    stmt = conn->stmt[conn->sql];
    kind = (m[0]->run == ngx_http_bytemark_mysql_pass);

    /* the statements of a kind share result buffers: bound again */
    if (ngx_http_bytemark_mysql_bind_row(conn, conn->sql) != NGX_OK) {
        conn->end(conn, NGX_ERROR);
        return;
    }

    ngx_memzero(b->bind, b->size * sizeof(MYSQL_BIND));

    /* the distinct keys, the last one repeated to fill the statement */
    for (i = 0, k = 0, key = m[0]; i < b->size; i++) {

        while (k < b->nmembers) {
            key = m[k++];

            if (k == 1 || ngx_http_bytemark_mysql_batch_cmp(&m[k - 1],
                                                            &m[k - 2]))
            {
                break;
            }
        }

        if (kind) {
            b->len[i] = NGX_HTTP_BYTEMARK_UUID_LEN;
            b->bind[i].buffer_type = MYSQL_TYPE_STRING;
            b->bind[i].buffer = ngx_http_bytemark_call_lookup(key)->uuid;
            b->bind[i].buffer_length = NGX_HTTP_BYTEMARK_UUID_LEN;
            b->bind[i].length = &b->len[i];

        } else {
            b->ids[i] = key->user_id;
            b->bind[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b->bind[i].buffer = &b->ids[i];
            b->bind[i].is_unsigned = 1;
        }
    }

    /* the entry's timestamp is when the read began (SPEC 3.1 step 3) */
    now = ngx_http_bytemark_now_ms();

    for (i = 0; i < b->nmembers; i++) {
        ngx_http_bytemark_call_lookup(m[i])->answer.timestamp = now;
    }

    if (mysql_stmt_bind_param(stmt, b->bind) != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                           "bind"));
        return;
    }

    ngx_http_bytemark_mysql_execute(conn, stmt,
                                    ngx_http_bytemark_mysql_batch_store);
}


static void
ngx_http_bytemark_mysql_batch_store(ngx_http_bytemark_mysql_conn_t *conn)
{
    MYSQL_STMT  *stmt;

    stmt = conn->stmt[conn->sql];

    if (conn->ret_int != 0) {
        conn->end(conn, ngx_http_bytemark_mysql_stmt_error(stmt, conn->call,
                                                           "execute"));
        return;
    }

    ngx_http_bytemark_mysql_store(conn, stmt,
                                  ngx_http_bytemark_mysql_batch_rows);
}


/* the result is in memory: each row goes to the lookups it answers */

static void
ngx_http_bytemark_mysql_batch_rows(ngx_http_bytemark_mysql_conn_t *conn)
{
    int                              rc;
    ngx_int_t                        erc;
    ngx_uint_t                       i, kind;
    MYSQL_STMT                      *stmt;
    ngx_http_bytemark_call_t        *call;
    ngx_http_bytemark_answer_t      *a;
    ngx_http_bytemark_mysql_row_t   *row;
    ngx_http_bytemark_mysql_batch_t *b;

    b = &conn->batch;
    stmt = conn->stmt[conn->sql];
    kind = (conn->sql - NGX_HTTP_BYTEMARK_SQL_BATCH)
           / NGX_HTTP_BYTEMARK_MYSQL_SIZES;
    row = &conn->brow[kind];
    erc = NGX_OK;

    while ((rc = ngx_http_bytemark_mysql_fetch(conn, conn->sql)) == 0) {
        if (ngx_http_bytemark_mysql_batch_row(conn, row) != NGX_OK) {
            snprintf(conn->call->error, sizeof(conn->call->error),
                     "out of memory building passes");
            erc = NGX_ERROR;
            break;
        }
    }

    if (erc == NGX_OK && rc != 0 && rc != MYSQL_NO_DATA) {
        erc = ngx_http_bytemark_mysql_stmt_error(stmt, conn->call, "fetch");
    }

    for (i = 0; erc == NGX_OK && i < b->nmembers; i++) {
        a = &ngx_http_bytemark_call_lookup(b->members[i])->answer;

        if (ngx_http_bytemark_passes_close(&a->passes[0]) != NGX_OK
            || ngx_http_bytemark_passes_close(&a->passes[1]) != NGX_OK)
        {
            snprintf(conn->call->error, sizeof(conn->call->error),
                     "out of memory");
            erc = NGX_ERROR;
        }
    }

    mysql_stmt_free_result(stmt);

    if (erc != NGX_OK) {
        for (i = 0; i < b->nmembers; i++) {
            ngx_http_bytemark_answer_release(
                &ngx_http_bytemark_call_lookup(b->members[i])->answer);
        }

        conn->end(conn, erc);
        return;
    }

    for (i = 0; i < b->nmembers; i++) {
        call = b->members[i];
        a = &ngx_http_bytemark_call_lookup(call)->answer;

        if (kind == 0) {
            a->has_timestamp = 1;
            call->result = NGX_HTTP_BYTEMARK_FOUND;

        } else {
            call->result = (a->passes[0].n + a->passes[1].n)
                           ? NGX_HTTP_BYTEMARK_FOUND
                           : NGX_HTTP_BYTEMARK_NOT_FOUND;
        }
    }

    conn->end(conn, NGX_OK);
}


/*
 * One row: to every lookup of its user (tickets), or of its user and pass
 * (a pass of another user answers nobody).
 */

static ngx_int_t
ngx_http_bytemark_mysql_batch_row(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_mysql_row_t *row)
{
    uint64_t                          id;
    ngx_uint_t                        i, lo, hi, mid, kind;
    ngx_http_bytemark_call_t        **m;
    ngx_http_bytemark_call_lookup_t  *lookup;
    ngx_http_bytemark_mysql_batch_t  *b;

    b = &conn->batch;
    m = b->members;
    kind = (m[0]->run == ngx_http_bytemark_mysql_pass);

    if (row->is_null[NGX_HTTP_BYTEMARK_COL_USER]) {
        return NGX_OK;
    }

    row->buf[NGX_HTTP_BYTEMARK_COL_USER]
            [row->length[NGX_HTTP_BYTEMARK_COL_USER]] = '\0';
    id = strtoull(row->buf[NGX_HTTP_BYTEMARK_COL_USER], NULL, 10);

    /* the first lookup of that user: the members are sorted by user */
    lo = 0;
    hi = b->nmembers;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (m[mid]->user_id < id) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    for (i = lo; i < b->nmembers && m[i]->user_id == id; i++) {
        lookup = ngx_http_bytemark_call_lookup(m[i]);

        if (kind
            && (row->is_null[NGX_HTTP_BYTEMARK_COL_UUID]
                || row->length[NGX_HTTP_BYTEMARK_COL_UUID]
                   != NGX_HTTP_BYTEMARK_UUID_LEN
                || ngx_strncasecmp(lookup->uuid,
                       (u_char *) row->buf[NGX_HTTP_BYTEMARK_COL_UUID],
                       NGX_HTTP_BYTEMARK_UUID_LEN) != 0
                || lookup->answer.passes[0].n + lookup->answer.passes[1].n))
        {
            continue;
        }

        if (ngx_http_bytemark_mysql_pass_object(row, &lookup->answer)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * As ngx_http_bytemark_mysql_read_end() for one lookup: a connection that
 * broke is replaced and the batch run again once, if a budget allows; then
 * each lookup gets the outcome, and reports it to the breaker, as its own
 * query would have.
 */

static void
ngx_http_bytemark_mysql_batch_end(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_int_t rc)
{
    ngx_uint_t                 i, n;
    ngx_http_bytemark_call_t  *m[NGX_HTTP_BYTEMARK_MYSQL_BATCH_MAX];

    n = conn->batch.nmembers;

    if (rc == NGX_DECLINED && conn->attempt == 0 && !conn->cancelled
        && (ngx_msec_int_t) (conn->deadline - ngx_current_msec) > 0)
    {
        conn->attempt++;

        if (conn->mysql) {
            conn->node->generation++;
            ngx_http_bytemark_mysql_close(conn);
        }

        for (i = 0; i < n; i++) {
            conn->batch.members[i]->error_kind =
                                                  NGX_HTTP_BYTEMARK_ERR_NONE;
        }

        ngx_http_bytemark_mysql_batch_try(conn);
        return;
    }

    ngx_memcpy(m, conn->batch.members, n * sizeof(ngx_http_bytemark_call_t *));

    /* the leader (conn->call) holds the error of the batch */
    for (i = 0; i < n; i++) {
        if (m[i] != conn->call) {
            ngx_memcpy(m[i]->error, conn->call->error, sizeof(m[i]->error));
            m[i]->error_kind = conn->call->error_kind;
        }
    }

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_mysql_outcome(conn, m[i], rc);
    }

    ngx_http_bytemark_mysql_release(conn, rc == NGX_DECLINED);

    for (i = 0; i < n; i++) {
        ngx_http_bytemark_call_finish(m[i]);
    }
}
