
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * TLS to the MySQL servers (bytemark_mysql_ssl*).  Connector/C does the
 * handshake inside mysql_real_connect(), run on the backend's thread pool
 * (ngx_http_bytemark_mysql_handshake.c); here are the options it is given,
 * and the name it verifies.
 *
 * The library is given a server's address, never its name (the name was
 * resolved at configuration time so that it never looks one up), and
 * checks the certificate against its copy of the host it was given
 * (X509_check_host(), X509_check_ip_asc()).  That copy is replaced by the
 * name to verify (bytemark_mysql_ssl_name, or the host as written) for the
 * handshake, from the library's I/O callback (ma_pvio_register_callback(),
 * called after each read and write of every connection of the process, in
 * whichever thread): the last write before the handshake is the client's
 * TLS request, after the library made its copy.  The connection being
 * connected is the thread's own (thread-local).  The copy is given back
 * once the connect is over, on the event loop.  A certificate for another
 * name then fails the connect before the credentials are sent; with
 * verification on, the library also refuses, before the credentials, a
 * server that offers no TLS; with it off, such a server is refused once
 * connected.
 *
 * Connector/C 3.3 does the handshake on a blocking socket, polling it
 * itself, even inside its non-blocking API: that is why the connect runs
 * on a thread.  Its waits there are bounded: the socket's receive and send
 * timeouts are set, from the callback, to what is left of the call's
 * budget (at most the connect timeout).  Once the connect is over, the
 * socket is made non-blocking here: OpenSSL then says "want read/write"
 * and the library yields to the event loop, as for a connection without
 * TLS, for every statement after.
 */


#include "ngx_http_bytemark_mysql_private.h"

#include <ma_pvio.h>


/* libmariadb exports it; no header of libmariadb-dev declares it */
int ma_pvio_register_callback(my_bool register_callback,
    void (*callback_function)(int mode, MYSQL *mysql, const uchar *buffer,
    size_t length));


static void ngx_http_bytemark_mysql_tls_io(int mode, MYSQL *m,
    const uchar *buffer, size_t length);
static void ngx_http_bytemark_mysql_tls_limit(
    ngx_http_bytemark_mysql_conn_t *conn);


/* the connection whose connect this thread runs, or NULL */
static __thread ngx_http_bytemark_mysql_conn_t
    *ngx_http_bytemark_mysql_tls_conn;
static ngx_uint_t                       ngx_http_bytemark_mysql_tls_hooked;


/* init_process: each server's name to verify, NUL-terminated */

ngx_int_t
ngx_http_bytemark_mysql_tls_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_str_t                        name;
    ngx_uint_t                       i;
    ngx_http_bytemark_mysql_node_t  *node;

    if (!bmcf->mysql_ssl) {
        pool->ssl = NULL;
        return NGX_OK;
    }

    pool->ssl = bmcf;

    if (!ngx_http_bytemark_mysql_tls_hooked) {
        if (ma_pvio_register_callback(1, ngx_http_bytemark_mysql_tls_io)
            != 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "bytemark: ma_pvio_register_callback() failed");
            return NGX_ERROR;
        }

        ngx_http_bytemark_mysql_tls_hooked = 1;
    }

    for (i = 0; i < pool->nnodes; i++) {
        node = &pool->nodes[i];

        if (bmcf->mysql_ssl_name.len) {
            name = bmcf->mysql_ssl_name;

        } else if (node->conf->host.len) {
            name = node->conf->host;

        } else {
            /* a Unix socket: the server is this host */
            ngx_str_set(&name, "localhost");
        }

        node->ssl_name = ngx_pnalloc(cycle->pool, name.len + 1);
        if (node->ssl_name == NULL) {
            return NGX_ERROR;
        }

        ngx_cpystrn(node->ssl_name, name.data, name.len + 1);
    }

    return NGX_OK;
}


/* mysql_connect(): the options of a new connection, before its connect */

void
ngx_http_bytemark_mysql_tls_options(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL *m)
{
    my_bool                         on, off;
    ngx_http_bytemark_main_conf_t  *ssl;

    ssl = conn->node->pool->ssl;

    on = 1;
    off = 0;

    /* TLS or no connection: never a fallback to plain text */
    mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &on);

    if (ssl->mysql_ssl_verify) {
        mysql_options(m, MYSQL_OPT_SSL_CA,
                      ssl->mysql_ssl_trusted_certificate.data);
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);

    } else {
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &off);
    }

    if (ssl->mysql_ssl_certificate.len) {
        mysql_options(m, MYSQL_OPT_SSL_CERT, ssl->mysql_ssl_certificate.data);
        mysql_options(m, MYSQL_OPT_SSL_KEY,
                      ssl->mysql_ssl_certificate_key.data);
    }
}


/* the connect's thread: the connection it connects now, then NULL */

void
ngx_http_bytemark_mysql_tls_running(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_tls_conn = conn;
}


/*
 * Every read and write of every connection of the process: only the one
 * being connected with TLS, before its handshake, is touched (see above).
 */

static void
ngx_http_bytemark_mysql_tls_io(int mode, MYSQL *m, const uchar *buffer,
    size_t length)
{
    char                            *name;
    MARIADB_PVIO                    *pvio;
    ngx_http_bytemark_mysql_conn_t  *conn;

    conn = ngx_http_bytemark_mysql_tls_conn;

    if (conn == NULL || conn->mysql != m || conn->tls_host != NULL
        || conn->node->pool->ssl == NULL)
    {
        return;
    }

    pvio = m->net.pvio;

    if (pvio == NULL || pvio->ctls != NULL || m->host == NULL
        || !m->options.use_ssl)
    {
        return;
    }

    ngx_http_bytemark_mysql_tls_limit(conn);

    /* malloc()ed as the library's own: each is freed by its owner */
    name = strdup(conn->node->pool->ssl->mysql_ssl_verify
                  ? (char *) conn->node->ssl_name : m->host);
    if (name == NULL) {
        return;
    }

    conn->tls_host = m->host;
    m->host = name;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server #%ui: TLS handshake, name \"%s\"",
                   conn->node->index + 1, name);
}


/*
 * The handshake's waits on the blocking socket: the call's budget left.
 * A thread: its own clock, not nginx's cached time.
 */

static void
ngx_http_bytemark_mysql_tls_limit(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_msec_t       left, max, now;
    ngx_socket_t     fd;
    struct timeval   tv;

    fd = (ngx_socket_t) mysql_get_socket(conn->mysql);

    if (fd == (ngx_socket_t) -1) {
        return;
    }

    now = ngx_http_bytemark_mysql_tls_now();

    left = (ngx_msec_int_t) (conn->tls_until - now) > 0
           ? conn->tls_until - now : 1;
    max = (ngx_msec_t) conn->node->pool->connect_timeout * 1000;

    left = ngx_min(left, max);

    tv.tv_sec = left / 1000;
    tv.tv_usec = (left % 1000) * 1000;

    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_socket_errno,
                      "bytemark: mysql TLS: setsockopt() failed");
    }
}


/* the library's copy of the host back, ours freed */

void
ngx_http_bytemark_mysql_tls_restore(ngx_http_bytemark_mysql_conn_t *conn)
{
    char  *name;

    if (conn->tls_host == NULL || conn->mysql == NULL) {
        return;
    }

    name = conn->mysql->host;
    conn->mysql->host = conn->tls_host;
    conn->tls_host = NULL;

    free(name);
}


/*
 * connected(): the socket made non-blocking; NGX_ERROR, with the cause in
 * the call's error, when the library fell back to plain text (it does
 * unless it verifies).
 */

ngx_int_t
ngx_http_bytemark_mysql_tls_check(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_socket_t                     fd;
    ngx_http_bytemark_mysql_node_t  *node;

    node = conn->node;

    if (node->pool->ssl == NULL) {
        return NGX_OK;
    }

    if (mysql_get_ssl_cipher(conn->mysql)) {
        /* from now on OpenSSL's waits go to the event loop (see above) */
        fd = (ngx_socket_t) mysql_get_socket(conn->mysql);

        if (ngx_nonblocking(fd) == -1) {
            snprintf(conn->call->error, sizeof(conn->call->error),
                     "mysql server #%u: TLS: " ngx_nonblocking_n " failed",
                     (unsigned) node->index + 1);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    snprintf(conn->call->error, sizeof(conn->call->error),
             "cannot connect to mysql server #%u: TLS to \"%s\": the "
             "server does not offer TLS",
             (unsigned) node->index + 1, node->ssl_name);

    return NGX_ERROR;
}


/* connected(): the cause of a failed connect, TLS named when it is on */

void
ngx_http_bytemark_mysql_connect_error(ngx_http_bytemark_mysql_conn_t *conn)
{
    ngx_http_bytemark_mysql_node_t  *node;

    node = conn->node;

    if (node->pool->ssl && mysql_errno(conn->mysql) == CR_SSL_CONNECTION_ERROR)
    {
        snprintf(conn->call->error, sizeof(conn->call->error),
                 "cannot connect to mysql server #%u: TLS to \"%s\": %s",
                 (unsigned) node->index + 1, node->ssl_name,
                 mysql_error(conn->mysql));
        return;
    }

    snprintf(conn->call->error, sizeof(conn->call->error),
             "cannot connect to mysql server #%u: %s",
             (unsigned) node->index + 1, mysql_error(conn->mysql));
}


/* milliseconds of CLOCK_MONOTONIC: for a thread, and the loop that posts it */

ngx_msec_t
ngx_http_bytemark_mysql_tls_now(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
