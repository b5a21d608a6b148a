
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * The MySQL side's own declarations, for the files of src/mysql/ only
 * (t/02-layers.t refuses it anywhere else): the per-worker pools and wait
 * queues (mysql_conn.c), the driver that runs Connector/C's non-blocking
 * calls on nginx's event loop (mysql_loop.c), prepared statements
 * (mysql_stmt.c), the statements of a read and rows into answers
 * (mysql.c), lookups batched into one query (mysql_batch.c), the ingest
 * transaction (mysql_ingest.c).
 */


#ifndef _NGX_HTTP_BYTEMARK_MYSQL_PRIVATE_H_INCLUDED_
#define _NGX_HTTP_BYTEMARK_MYSQL_PRIVATE_H_INCLUDED_


#include "ngx_http_bytemark_mysql.h"

#include <mysql.h>
#include <errmsg.h>


#define NGX_HTTP_BYTEMARK_SQL_TICKETS  0
#define NGX_HTTP_BYTEMARK_SQL_PASS     1
#define NGX_HTTP_BYTEMARK_SQL_UPSERT   2
#define NGX_HTTP_BYTEMARK_SQL_OWNER    3
#define NGX_HTTP_BYTEMARK_SQL_N        4

/*
 * Batched reads (ngx_http_bytemark_mysql_batch.c): one statement per kind
 * (tickets, pass) and size, sizes 2, 4, ... 256; statement number
 * SQL_BATCH + kind * SIZES + s has 2 << s parameters.
 */
#define NGX_HTTP_BYTEMARK_MYSQL_SIZES  8
#define NGX_HTTP_BYTEMARK_MYSQL_BATCH_MAX                                     \
    (2 << (NGX_HTTP_BYTEMARK_MYSQL_SIZES - 1))
#define NGX_HTTP_BYTEMARK_SQL_BATCH    NGX_HTTP_BYTEMARK_SQL_N
#define NGX_HTTP_BYTEMARK_SQL_ALL                                             \
    (NGX_HTTP_BYTEMARK_SQL_N + 2 * NGX_HTTP_BYTEMARK_MYSQL_SIZES)

/* the columns the two SELECTs of passes return, in this order */
#define NGX_HTTP_BYTEMARK_COL_UUID     0
#define NGX_HTTP_BYTEMARK_COL_VERSION  1
#define NGX_HTTP_BYTEMARK_COL_STATUS   2
#define NGX_HTTP_BYTEMARK_COL_FREE     3
#define NGX_HTTP_BYTEMARK_COL_PAYLOAD  4
#define NGX_HTTP_BYTEMARK_COL_HASH     5
#define NGX_HTTP_BYTEMARK_COL_TS       6
#define NGX_HTTP_BYTEMARK_COLS         7
/* a batched SELECT returns the row's user too */
#define NGX_HTTP_BYTEMARK_COL_USER     7
#define NGX_HTTP_BYTEMARK_BCOLS        8

#define NGX_HTTP_BYTEMARK_MYSQL_PARAMS 8


typedef struct ngx_http_bytemark_mysql_conn_s  ngx_http_bytemark_mysql_conn_t;
typedef struct ngx_http_bytemark_mysql_node_s  ngx_http_bytemark_mysql_node_t;

/*
 * One Connector/C call: the _start() function when ready is 0, its
 * _cont() with the events that happened otherwise.  Returns what the
 * library waits for (MYSQL_WAIT_*), 0 once the call is over.
 */
typedef int (*ngx_http_bytemark_mysql_op_pt)(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);

/* what to do once an op is over */
typedef void (*ngx_http_bytemark_mysql_step_pt)(
    ngx_http_bytemark_mysql_conn_t *conn);

/*
 * How a statement ended: NGX_OK; NGX_ERROR, the server answered with an
 * error; NGX_DECLINED, the connection is gone (or could not be made);
 * NGX_AGAIN, a deadlock, the transaction may be run again; NGX_ABORT, a
 * pass of another user; NGX_DONE, the table refused a value.
 */
typedef void (*ngx_http_bytemark_mysql_end_pt)(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_int_t rc);


/*
 * The result row of a prepared SELECT of passes, fetched as strings: the
 * library converts numbers for us.  Kept with the connection's statement
 * and bound once; a value longer than its buffer grows the buffer.
 */
typedef struct {
    MYSQL_BIND                        bind[NGX_HTTP_BYTEMARK_BCOLS];
    unsigned long                     length[NGX_HTTP_BYTEMARK_BCOLS];
    my_bool                           is_null[NGX_HTTP_BYTEMARK_BCOLS];
    char                             *buf[NGX_HTTP_BYTEMARK_BCOLS];
    size_t                            size[NGX_HTTP_BYTEMARK_BCOLS];
    ngx_uint_t                        ncols;
} ngx_http_bytemark_mysql_row_t;


/*
 * The parameters of a batched read, allocated per connection slot for the
 * largest size in use: the ids (or uuids) must outlive the execute op.
 */
typedef struct {
    MYSQL_BIND                       *bind;
    unsigned long                    *len;
    unsigned long long               *ids;
    ngx_http_bytemark_call_t        **members;   /* the calls it answers */
    ngx_uint_t                        nmembers;
    ngx_uint_t                        size;      /* parameters bound */
} ngx_http_bytemark_mysql_batch_t;


struct ngx_http_bytemark_mysql_conn_s {
    MYSQL                            *mysql;
    MYSQL_STMT                       *stmt[NGX_HTTP_BYTEMARK_SQL_ALL];
    ngx_http_bytemark_mysql_row_t     row[NGX_HTTP_BYTEMARK_SQL_UPSERT];
    ngx_http_bytemark_mysql_row_t     brow[2];   /* batched: all sizes */
    ngx_http_bytemark_mysql_batch_t   batch;
    ngx_connection_t                 *c;        /* the library's socket */
    ngx_http_bytemark_mysql_node_t   *node;
    ngx_http_bytemark_call_t         *call;     /* NULL while idle */

    /* the op in progress, and what the library waits for */
    ngx_http_bytemark_mysql_op_pt     op;
    ngx_http_bytemark_mysql_step_pt   next;
    ngx_http_bytemark_mysql_step_pt   then;     /* after connect, prepare */
    ngx_http_bytemark_mysql_end_pt    end;
    MYSQL_STMT                       *stmt_op;
    int                               wait;

    /* what the last op returned */
    MYSQL                            *ret_mysql;
    int                               ret_int;
    my_bool                           ret_bool;

    /* the statement's parameters must outlive its execute op */
    MYSQL_BIND                        param[NGX_HTTP_BYTEMARK_MYSQL_PARAMS];
    unsigned long                     param_len[NGX_HTTP_BYTEMARK_MYSQL_PARAMS];
    unsigned long long                user_id;
    unsigned long long                timestamp;
    unsigned char                     version;
    char                              free_ticket;
    MYSQL_BIND                        owner_bind;
    unsigned long long                owner;

    ngx_uint_t                        sql;       /* a read's statement */
    ngx_uint_t                        pass;      /* an ingest's next pass */
    ngx_uint_t                        attempt;
    ngx_int_t                         rc;        /* an ingest's outcome */
    ngx_msec_t                        start;     /* this attempt's */
    ngx_msec_t                        deadline;

    ngx_msec_t                        used;      /* last release */
    ngx_uint_t                        generation;

    unsigned                          busy:1;
    unsigned                          cancelled:1;  /* socket shut down */
    unsigned                          reading:1;    /* counted in "reading" */

    /* TLS: the library's copy of the host while the name replaces it */
    char                             *tls_host;

    /* TLS: the connect runs on the thread pool, until this (monotonic) */
    ngx_thread_task_t                 task;
    ngx_msec_t                        tls_until;
};


/*
 * One server.  When one of its connections breaks, the others opened before
 * it most likely broke too (a restart): the generation goes up, and older
 * connections are replaced before use instead of failing a query each.
 * Calls wait in its queue for a free connection, on the event loop.
 */
struct ngx_http_bytemark_mysql_node_s {
    ngx_http_bytemark_mysql_server_t *conf;
    ngx_http_bytemark_mysql_conn_t   *conns;
    ngx_http_bytemark_mysql_pool_t   *pool;
    ngx_uint_t                        index;     /* 0: the primary */
    ngx_uint_t                        generation;
    ngx_queue_t                       waiting;   /* of calls */
    ngx_uint_t                        nwaiting;
    ngx_queue_t                       reads;     /* lookups, to batch */
    ngx_uint_t                        nreads;
    ngx_uint_t                        reading;   /* connections reading */
    ngx_event_t                       wake;      /* hands connections out */
    u_char                           *ssl_name;  /* TLS: the name verified */
    ngx_int_t                         current;   /* spread: its turn */
};


struct ngx_http_bytemark_mysql_pool_s {
    ngx_http_bytemark_mysql_node_t   *nodes;
    ngx_uint_t                        nnodes;
    unsigned int                      connect_timeout;   /* seconds */
    unsigned int                      io_timeout;        /* seconds */
    char                             *sql[NGX_HTTP_BYTEMARK_SQL_ALL];
    ngx_uint_t                        batch;     /* bytemark_mysql_batch */
    ngx_uint_t                        sizes;     /* batch sizes in use */
    ngx_uint_t                        inflight;  /* reads before queueing */
    ngx_http_bytemark_main_conf_t    *ssl;       /* TLS settings, or NULL */
};


/* the reads (ngx_http_bytemark_mysql.c) */
ngx_uint_t ngx_http_bytemark_mysql_breaker(ngx_http_bytemark_call_t *call,
    ngx_uint_t i);
char *ngx_http_bytemark_mysql_sql(ngx_cycle_t *cycle, ngx_str_t *table,
    const char *head, const char *tail);
void ngx_http_bytemark_mysql_outcome(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_call_t *call, ngx_int_t rc);
ngx_int_t ngx_http_bytemark_mysql_pass_object(
    ngx_http_bytemark_mysql_row_t *row, ngx_http_bytemark_answer_t *a);

/* batched reads (ngx_http_bytemark_mysql_batch.c) */
ngx_int_t ngx_http_bytemark_mysql_batch_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool);
ngx_int_t ngx_http_bytemark_mysql_batch_slot(ngx_cycle_t *cycle,
    ngx_http_bytemark_mysql_pool_t *pool, ngx_http_bytemark_mysql_conn_t *conn);
ngx_uint_t ngx_http_bytemark_mysql_is_read(ngx_http_bytemark_call_t *call);
void ngx_http_bytemark_mysql_batch_read(ngx_http_bytemark_mysql_conn_t *conn);

/* the pool (ngx_http_bytemark_mysql_conn.c) */
ngx_int_t ngx_http_bytemark_mysql_pool_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool);
void ngx_http_bytemark_mysql_pool_done(ngx_http_bytemark_mysql_pool_t *pool);
void ngx_http_bytemark_mysql_close(ngx_http_bytemark_mysql_conn_t *conn);
void ngx_http_bytemark_mysql_release(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t broken);
void ngx_http_bytemark_mysql_idle_event(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_event_t *ev);
void ngx_http_bytemark_mysql_forget(ngx_http_bytemark_mysql_conn_t *conn);

/* the non-blocking driver (ngx_http_bytemark_mysql_loop.c) */
void ngx_http_bytemark_mysql_run(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_mysql_op_pt op, ngx_http_bytemark_mysql_step_pt next);
void ngx_http_bytemark_mysql_connect(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_http_bytemark_mysql_step_pt next);
void ngx_http_bytemark_mysql_connected(ngx_http_bytemark_mysql_conn_t *conn);

/* TLS (ngx_http_bytemark_mysql_tls.c) */
ngx_int_t ngx_http_bytemark_mysql_tls_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool);
void ngx_http_bytemark_mysql_tls_options(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL *m);
void ngx_http_bytemark_mysql_tls_running(
    ngx_http_bytemark_mysql_conn_t *conn);
void ngx_http_bytemark_mysql_tls_restore(
    ngx_http_bytemark_mysql_conn_t *conn);
ngx_int_t ngx_http_bytemark_mysql_tls_check(
    ngx_http_bytemark_mysql_conn_t *conn);
void ngx_http_bytemark_mysql_connect_error(
    ngx_http_bytemark_mysql_conn_t *conn);
ngx_msec_t ngx_http_bytemark_mysql_tls_now(void);

/* a TLS connect on the thread pool (ngx_http_bytemark_mysql_handshake.c) */
void ngx_http_bytemark_mysql_tls_connect(ngx_http_bytemark_mysql_conn_t *conn);

/* statements (ngx_http_bytemark_mysql_stmt.c) */
void ngx_http_bytemark_mysql_prepare(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql, ngx_http_bytemark_mysql_step_pt next);
void ngx_http_bytemark_mysql_execute(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL_STMT *stmt, ngx_http_bytemark_mysql_step_pt next);
void ngx_http_bytemark_mysql_store(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL_STMT *stmt, ngx_http_bytemark_mysql_step_pt next);
ngx_int_t ngx_http_bytemark_mysql_bind_row(
    ngx_http_bytemark_mysql_conn_t *conn, ngx_uint_t sql);
int ngx_http_bytemark_mysql_fetch(ngx_http_bytemark_mysql_conn_t *conn,
    ngx_uint_t sql);
ngx_int_t ngx_http_bytemark_mysql_stmt_error(MYSQL_STMT *stmt,
    ngx_http_bytemark_call_t *call, const char *what);
ngx_int_t ngx_http_bytemark_mysql_error(MYSQL *m,
    ngx_http_bytemark_call_t *call, const char *what);

/* the transaction statements of an ingest, as ops */
int ngx_http_bytemark_mysql_op_autocommit_off(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
int ngx_http_bytemark_mysql_op_autocommit_on(
    ngx_http_bytemark_mysql_conn_t *conn, int ready);
int ngx_http_bytemark_mysql_op_commit(ngx_http_bytemark_mysql_conn_t *conn,
    int ready);
int ngx_http_bytemark_mysql_op_rollback(ngx_http_bytemark_mysql_conn_t *conn,
    int ready);


#endif /* _NGX_HTTP_BYTEMARK_MYSQL_PRIVATE_H_INCLUDED_ */
