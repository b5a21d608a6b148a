
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * TLS to the MySQL servers (bytemark_mysql_ssl*).  Connector/C does the
 * handshake inside mysql_real_connect_start()/_cont(), on the event loop
 * like the rest of the connect (ngx_http_bytemark_mysql_loop.c); here are
 * the options it is given and the check of the server's name.
 *
 * The library is given a server's address, never its name (the name was
 * resolved at configuration time so that it never looks one up on the
 * loop), and would check the certificate against that address.  So its own
 * name check is off, and the name (bytemark_mysql_ssl_name, or the host as
 * written) goes to OpenSSL's verification of the handshake itself: at the
 * connect's first wait after the library created its SSL object, before
 * the server's certificate has arrived, the name is set on that SSL
 * object's verification parameters.  A certificate for another name then
 * fails the handshake, before the credentials are sent.  Should the
 * handshake ever complete without such a wait, the name is checked once
 * the connect is over, and the connection closed on a mismatch.
 */


#include "ngx_http_bytemark_mysql_private.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/*
 * Connector/C's own structures (libmariadb-dev), for a connection's SSL *:
 * ma_pvio.h declares its TLS member as void * unless HAVE_TLS, and
 * ma_tls.h, included after it, has what that points to.
 */
#include <ma_pvio.h>
#undef MARIADB_TLS
#include <ma_tls.h>


static SSL *ngx_http_bytemark_mysql_ssl(MYSQL *m);
static ngx_int_t ngx_http_bytemark_mysql_is_ip(u_char *name);


/* init_process: each server's name to verify, NUL-terminated */

ngx_int_t
ngx_http_bytemark_mysql_tls_init(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf, ngx_http_bytemark_mysql_pool_t *pool)
{
    ngx_str_t                        name;
    ngx_uint_t                       i;
    ngx_http_bytemark_mysql_node_t  *node;

    if (!bmcf->mysql_ssl.enable) {
        pool->ssl = NULL;
        return NGX_OK;
    }

    pool->ssl = &bmcf->mysql_ssl;

    for (i = 0; i < pool->nnodes; i++) {
        node = &pool->nodes[i];

        if (bmcf->mysql_ssl.name.len) {
            name = bmcf->mysql_ssl.name;

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

        node->ssl_name_ip = ngx_http_bytemark_mysql_is_ip(node->ssl_name);
    }

    return NGX_OK;
}


/* mysql_connect(): the options of a new connection, before its connect */

void
ngx_http_bytemark_mysql_tls_options(ngx_http_bytemark_mysql_conn_t *conn,
    MYSQL *m)
{
    my_bool                         on, off;
    ngx_http_bytemark_mysql_ssl_t  *ssl;

    ssl = conn->node->pool->ssl;

    conn->tls_named = 0;

    on = 1;
    off = 0;

    /* TLS or no connection: never a fallback to plain text */
    mysql_options(m, MYSQL_OPT_SSL_ENFORCE, &on);

    /* the name is ours to check (see above); the chain is the library's,
     * which verifies it whenever a CA is given */
    mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &off);

    if (ssl->verify) {
        mysql_options(m, MYSQL_OPT_SSL_CA, ssl->trusted_certificate.data);
    }

    if (ssl->certificate.len) {
        mysql_options(m, MYSQL_OPT_SSL_CERT, ssl->certificate.data);
        mysql_options(m, MYSQL_OPT_SSL_KEY, ssl->certificate_key.data);
    }
}


/*
 * op_connect: the library waits.  Once its SSL object exists and before
 * the server's certificate is in, the name goes to the verification.
 */

void
ngx_http_bytemark_mysql_tls_wait(ngx_http_bytemark_mysql_conn_t *conn)
{
    SSL                             *ssl;
    X509                            *cert;
    X509_VERIFY_PARAM               *param;
    ngx_http_bytemark_mysql_node_t  *node;

    node = conn->node;

    if (node->pool->ssl == NULL || !node->pool->ssl->verify
        || conn->tls_named)
    {
        return;
    }

    ssl = ngx_http_bytemark_mysql_ssl(conn->mysql);
    if (ssl == NULL) {
        return;
    }

    cert = SSL_get_peer_certificate(ssl);

    if (cert) {
        /* too late for the handshake: checked after the connect */
        X509_free(cert);
        return;
    }

    param = SSL_get0_param(ssl);

    X509_VERIFY_PARAM_set_hostflags(param,
                                    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);

    if (node->ssl_name_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(param, (char *) node->ssl_name)
            != 1)
        {
            return;
        }

    } else if (X509_VERIFY_PARAM_set1_host(param, (char *) node->ssl_name, 0)
               != 1)
    {
        return;
    }

    conn->tls_named = 1;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "bytemark: mysql server #%ui: TLS verifies \"%s\"",
                   node->index + 1, node->ssl_name);
}


/*
 * connected(): NGX_OK, or NGX_ERROR with the cause in the call's error
 * when the handshake went by without the name: the name is checked now.
 */

ngx_int_t
ngx_http_bytemark_mysql_tls_check(ngx_http_bytemark_mysql_conn_t *conn)
{
    int                              ok;
    SSL                             *ssl;
    X509                            *cert;
    ngx_http_bytemark_mysql_node_t  *node;

    node = conn->node;

    if (node->pool->ssl == NULL || !node->pool->ssl->verify
        || conn->tls_named)
    {
        return NGX_OK;
    }

    ok = 0;

    ssl = ngx_http_bytemark_mysql_ssl(conn->mysql);
    cert = ssl ? SSL_get_peer_certificate(ssl) : NULL;

    if (cert) {
        if (node->ssl_name_ip) {
            ok = X509_check_ip_asc(cert, (char *) node->ssl_name, 0) == 1;

        } else {
            ok = X509_check_host(cert, (char *) node->ssl_name, 0,
                                 X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL)
                 == 1;
        }

        X509_free(cert);
    }

    if (ok) {
        return NGX_OK;
    }

    snprintf(conn->call->error, sizeof(conn->call->error),
             "cannot connect to mysql server #%u: TLS to \"%s\": the "
             "server's certificate is not for that name",
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


static SSL *
ngx_http_bytemark_mysql_ssl(MYSQL *m)
{
    MARIADB_TLS   *ctls;
    MARIADB_PVIO  *pvio;

    pvio = m->net.pvio;

    if (pvio == NULL || pvio->ctls == NULL) {
        return NULL;
    }

    ctls = (MARIADB_TLS *) pvio->ctls;

    return ctls->ssl;
}


static ngx_int_t
ngx_http_bytemark_mysql_is_ip(u_char *name)
{
    u_char  buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, (char *) name, buf) == 1
           || inet_pton(AF_INET6, (char *) name, buf) == 1;
}
