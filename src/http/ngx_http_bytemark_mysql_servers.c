
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * bytemark_mysql: a MySQL server, written as nginx writes the servers of an
 * upstream (addr:port, unix:/path) or with host=/socket=/port=, with its
 * credentials, pool, passive health and weight.
 */


#include "ngx_http_bytemark_http.h"


#define NGX_HTTP_BYTEMARK_MYSQL_POOL_SIZE  8
#define NGX_HTTP_BYTEMARK_MYSQL_PORT       3306

/* max_fails= and fail_timeout= when only the other one is given (nginx's) */
#define NGX_HTTP_BYTEMARK_MAX_FAILS        1
#define NGX_HTTP_BYTEMARK_FAIL_TIMEOUT     10000


static char *ngx_http_bytemark_mysql_resolve(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv);
static char *ngx_http_bytemark_mysql_addr(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv, ngx_str_t *addr);
static char *ngx_http_bytemark_mysql_params_addr(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv);
static char *ngx_http_bytemark_mysql_name(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv);
static void ngx_http_bytemark_mysql_health_defaults(
    ngx_http_bytemark_mysql_server_t *srv);
static char *ngx_http_bytemark_mysql_server(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv, ngx_str_t *addr);


/*
 * bytemark_mysql [addr[:port] | unix:/path] host=... | socket=...
 *                [port=3306] user=... [password=... | password_file=...]
 *                database=... [pool_size=N] [max_fails=N]
 *                [fail_timeout=time] [weight=N];
 *
 * The server is written as nginx's upstream "server" lines write it (a
 * first argument without "="), or with today's host=/socket=/port=, not
 * both.  Repeated for read replicas: the first is the primary.
 */

char *
ngx_http_bytemark_set_mysql(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_str_t                         *value, *addr;
    ngx_http_bytemark_param_err_t      err;
    ngx_http_bytemark_mysql_server_t  *srv;

    /* cf->args values are NUL-terminated, as the client library wants */
    static ngx_http_bytemark_param_t  params[] = {
        { ngx_string("host"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, host), 0, 0 },
        { ngx_string("socket"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, socket), 0, 0 },
        { ngx_string("port"), NGX_HTTP_BYTEMARK_PARAM_NUM,
          offsetof(ngx_http_bytemark_mysql_server_t, port), 1, 65535 },
        { ngx_string("user"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, user), 0, 0 },
        { ngx_string("password"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, password), 0, 0 },
        { ngx_string("database"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, database), 0, 0 },
        { ngx_string("pool_size"), NGX_HTTP_BYTEMARK_PARAM_NUM,
          offsetof(ngx_http_bytemark_mysql_server_t, pool_size), 1, 1024 },
        { ngx_string("max_fails"), NGX_HTTP_BYTEMARK_PARAM_NUM,
          offsetof(ngx_http_bytemark_mysql_server_t, max_fails), 0, 1000 },
        { ngx_string("fail_timeout"), NGX_HTTP_BYTEMARK_PARAM_MSEC,
          offsetof(ngx_http_bytemark_mysql_server_t, fail_timeout), 1, 0 },
        { ngx_string("password_file"), NGX_HTTP_BYTEMARK_PARAM_STR,
          offsetof(ngx_http_bytemark_mysql_server_t, password_file), 0, 0 },
        { ngx_string("weight"), NGX_HTTP_BYTEMARK_PARAM_NUM,
          offsetof(ngx_http_bytemark_mysql_server_t, weight), 1, 100 },
        { ngx_null_string, 0, 0, 0, 0 }
    };

    if (bmcf->mysql_servers
        && bmcf->mysql_servers->nelts
           == NGX_HTTP_BYTEMARK_BREAKERS - NGX_HTTP_BYTEMARK_BREAKER_MYSQL)
    {
        return "is repeated too often";
    }

    if (bmcf->mysql_servers == NULL) {
        bmcf->mysql_servers = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_bytemark_mysql_server_t));
        if (bmcf->mysql_servers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    srv = ngx_array_push(bmcf->mysql_servers);
    if (srv == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(srv, sizeof(ngx_http_bytemark_mysql_server_t));
    srv->pool_size = NGX_HTTP_BYTEMARK_MYSQL_POOL_SIZE;
    srv->max_fails = NGX_CONF_UNSET_UINT;
    srv->fail_timeout = NGX_CONF_UNSET_MSEC;
    srv->weight = 1;

    value = cf->args->elts;

    /* "addr:port" or "unix:/path": the first argument, without "=" */
    addr = (ngx_strncmp(value[1].data, "unix:", 5) == 0
            || ngx_strlchr(value[1].data, value[1].data + value[1].len, '=')
               == NULL)
           ? &value[1] : NULL;

    if (ngx_http_bytemark_parse_params(cf, addr ? 2 : 1, params, srv, &err)
        != NGX_OK)
    {
        /* never echo the argument: it may be the password */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql\" has an invalid parameter #%ui "
                           "(expected addr:port or unix:/path first, or "
                           "host=, socket=, port=1..65535; user=, "
                           "password=, password_file=, database=, "
                           "pool_size=1..1024, max_fails=0..1000, "
                           "fail_timeout=<time>, weight=1..100, each once)",
                           err.arg);
        return NGX_CONF_ERROR;
    }

    return ngx_http_bytemark_mysql_server(cf, srv, addr);
}


/* what the parameters cannot say alone, then the server's address */

static char *
ngx_http_bytemark_mysql_server(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv, ngx_str_t *addr)
{
    char  *rv;

    rv = ngx_http_bytemark_mysql_password_file(cf, srv);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    ngx_http_bytemark_mysql_health_defaults(srv);

    if (addr) {
        if (srv->host.len || srv->socket.len || srv->port) {
            return "takes the server as \"addr:port\" or \"unix:/path\", "
                   "or as \"host=\"/\"socket=\" with \"port=\", not both";
        }

    } else if ((srv->host.len == 0) == (srv->socket.len == 0)) {
        return "needs exactly one of \"host=\" and \"socket=\"";
    }

    if (srv->user.len == 0) {
        return "needs \"user=\"";
    }

    if (srv->database.len == 0) {
        return "needs \"database=\"";
    }

    if (addr) {
        return ngx_http_bytemark_mysql_addr(cf, srv, addr);
    }

    return ngx_http_bytemark_mysql_params_addr(cf, srv);
}


/* host=/socket=/port=: the server's name, and a host's address */

static char *
ngx_http_bytemark_mysql_params_addr(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv)
{
    if (srv->port == 0) {
        srv->port = NGX_HTTP_BYTEMARK_MYSQL_PORT;
    }

    if (ngx_http_bytemark_mysql_name(cf, srv) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (srv->host.len) {
        return ngx_http_bytemark_mysql_resolve(cf, srv);
    }

    return NGX_CONF_OK;
}


/*
 * Passive health is off unless asked for, as before it existed; either
 * parameter turns it on, the other one then taking nginx's default
 * (max_fails=1 fail_timeout=10s).
 */

static void
ngx_http_bytemark_mysql_health_defaults(ngx_http_bytemark_mysql_server_t *srv)
{
    if (srv->max_fails == NGX_CONF_UNSET_UINT
        && srv->fail_timeout == NGX_CONF_UNSET_MSEC)
    {
        srv->max_fails = 0;
    }

    if (srv->max_fails == NGX_CONF_UNSET_UINT) {
        srv->max_fails = NGX_HTTP_BYTEMARK_MAX_FAILS;
    }

    if (srv->fail_timeout == NGX_CONF_UNSET_MSEC) {
        srv->fail_timeout = NGX_HTTP_BYTEMARK_FAIL_TIMEOUT;
    }
}


/*
 * "addr[:port]" (port 3306 when omitted, as nginx's "server" lines default
 * to 80) or "unix:/path", parsed by nginx's own ngx_parse_url(); the name
 * is kept as written, with the port it got.
 */

static char *
ngx_http_bytemark_mysql_addr(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv, ngx_str_t *addr)
{
    u_char     *p;
    ngx_url_t   u;

    if (ngx_strncmp(addr->data, "unix:", 5) == 0) {
        if (addr->len == 5) {
            return "needs a path after \"unix:\"";
        }

        /* the tail of a NUL-terminated argument */
        srv->socket.data = addr->data + 5;
        srv->socket.len = addr->len - 5;
        srv->port = NGX_HTTP_BYTEMARK_MYSQL_PORT;
        srv->name = *addr;

        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *addr;
    u.default_port = NGX_HTTP_BYTEMARK_MYSQL_PORT;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.uri.len
        || u.host.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql\" server \"%V\": %s", addr,
                           u.err ? u.err : "not an address:port");
        return NGX_CONF_ERROR;
    }

    srv->port = u.port;

    /* the host alone, NUL-terminated, to be resolved as host= is */
    p = ngx_pnalloc(cf->pool, u.host.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, u.host.data, u.host.len);
    p[u.host.len] = '\0';

    srv->host.data = p;
    srv->host.len = u.host.len;

    if (u.no_port) {
        if (ngx_http_bytemark_mysql_name(cf, srv) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }

    } else {
        srv->name = *addr;
    }

    return ngx_http_bytemark_mysql_resolve(cf, srv);
}


/* "host:port" or "unix:/path", for the log and the health endpoint */

static char *
ngx_http_bytemark_mysql_name(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv)
{
    u_char  *p;
    size_t   len;

    len = srv->host.len ? srv->host.len + sizeof(":65535") - 1
                        : sizeof("unix:") - 1 + srv->socket.len;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    srv->name.data = p;
    srv->name.len = (srv->host.len
                     ? ngx_sprintf(p, "%V:%ui", &srv->host, srv->port)
                     : ngx_sprintf(p, "unix:%V", &srv->socket))
                    - p;

    return NGX_CONF_OK;
}


/*
 * The MySQL side runs on the event loop, where a host name must not be
 * looked up with a blocking call: the client library would call
 * getaddrinfo() inside its connect.  So a name is resolved here, once, as
 * nginx resolves the names of proxy_pass and upstream servers, and the
 * library is given the address: "nginx -t" fails for a name that does not
 * resolve.  Of several addresses the first is used; a reload resolves
 * again.
 */

static char *
ngx_http_bytemark_mysql_resolve(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv)
{
    u_char     *p;
    size_t      len;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = srv->host;
    u.default_port = (in_port_t) srv->port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql\" host \"%V\": %s",
                           &srv->host, u.err ? u.err : "host not found");
        return NGX_CONF_ERROR;
    }

    if (!u.no_port || u.uri.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql\" host \"%V\": give the port "
                           "with \"port=\"", &srv->host);
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    /* no port: IPv6 without brackets, as the library takes it */
    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, p,
                        NGX_SOCKADDR_STRLEN, 0);
    p[len] = '\0';

    srv->address.data = p;
    srv->address.len = len;

    return NGX_CONF_OK;
}
