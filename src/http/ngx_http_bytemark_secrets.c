
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Secrets in files and the files of TLS: bytemark_mysql password_file=,
 * bytemark_mongo_uri_file, bytemark_mysql_ssl_*.  A secret is read when the
 * configuration is read (start, "nginx -t", every reload), by the master,
 * before it drops privileges: nginx.conf holds none and "nginx -T" prints
 * none.  A file that cannot be used fails the configuration with a message
 * that names the directive and the file, never what the file holds.
 */


#include "ngx_http_bytemark_http.h"


/* a password or a URI; anything larger is not what the operator meant */
#define NGX_HTTP_BYTEMARK_SECRET_MAX  8192


static ngx_int_t ngx_http_bytemark_read_secret(ngx_conf_t *cf,
    const char *directive, ngx_str_t *path, ngx_str_t *secret);
static ngx_int_t ngx_http_bytemark_secret_line(ngx_conf_t *cf,
    const char *directive, ngx_str_t *path, u_char *buf, size_t *len);


/* bytemark_mongo_uri_file <path>: the whole URI, credentials included */

char *
ngx_http_bytemark_set_mongo_uri_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    char        err[256];
    ngx_str_t  *value, uri;

    if (bmcf->mongo_uri_file.len) {
        return "is duplicate";
    }

    if (bmcf->mongo_uri.len) {
        return "conflicts with \"bytemark_mongo_uri\"";
    }

    /* its calls run on a thread pool */
    if (ngx_http_bytemark_check_threads(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (ngx_http_bytemark_read_secret(cf, "bytemark_mongo_uri_file",
                                      &value[1], &uri)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the driver's message may repeat the password: err comes scrubbed */
    if (ngx_http_bytemark_mongo_check_uri(&uri, err, sizeof(err)) != NGX_OK) {
        ngx_explicit_memzero(uri.data, uri.len);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mongo_uri_file\" \"%V\" does not hold "
                           "a valid MongoDB connection string: %s",
                           &value[1], err);
        return NGX_CONF_ERROR;
    }

    bmcf->mongo_uri = uri;
    bmcf->mongo_uri_file = value[1];

    return NGX_CONF_OK;
}


/* bytemark_mysql ... password_file=<path>: exclusive with password= */

char *
ngx_http_bytemark_mysql_password_file(ngx_conf_t *cf,
    ngx_http_bytemark_mysql_server_t *srv)
{
    if (srv->password_file.len == 0) {
        return NGX_CONF_OK;
    }

    if (srv->password.data) {
        return "takes \"password=\" or \"password_file=\", not both";
    }

    if (ngx_http_bytemark_read_secret(cf, "bytemark_mysql password_file=",
                                      &srv->password_file, &srv->password)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * bytemark_mysql_ssl on: the connects run on a thread pool (the library's
 * TLS handshake blocks), so it needs threads, as bytemark_mongo_uri does
 */

char *
ngx_http_bytemark_set_mysql_ssl(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (bmcf->mysql_ssl && ngx_http_bytemark_check_threads(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * bytemark_mysql_ssl_trusted_certificate, _certificate, _certificate_key:
 * the file must be readable now (the library reads it at each connect, in
 * a worker); a relative path is taken from nginx's configuration prefix,
 * as ssl_certificate's.
 */

char *
ngx_http_bytemark_set_ssl_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_fd_t    fd;
    ngx_str_t  *field, *value, path;

    field = (ngx_str_t *) ((u_char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (path.len == 0) {
        return "must name a file";
    }

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\" cannot read \"%s\"", &cmd->name,
                           path.data);
        return NGX_CONF_ERROR;
    }

    (void) ngx_close_file(fd);

    *field = path;

    return NGX_CONF_OK;
}


/* init_main_conf: what bytemark_mysql_ssl* need of each other */

char *
ngx_http_bytemark_check_mysql_ssl(ngx_conf_t *cf,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_conf_init_value(bmcf->mysql_ssl, 0);
    ngx_conf_init_value(bmcf->mysql_ssl_verify, 1);

    if (!bmcf->mysql_ssl || bmcf->mysql_servers == NULL) {
        return NGX_CONF_OK;
    }

    if (bmcf->mysql_ssl_verify && bmcf->mysql_ssl_trusted_certificate.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql_ssl_verify\" is on (the default "
                           "with \"bytemark_mysql_ssl on\") and needs "
                           "\"bytemark_mysql_ssl_trusted_certificate\"");
        return NGX_CONF_ERROR;
    }

    if ((bmcf->mysql_ssl_certificate.len == 0)
        != (bmcf->mysql_ssl_certificate_key.len == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql_ssl_certificate\" and "
                           "\"bytemark_mysql_ssl_certificate_key\" go "
                           "together");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The file's one line, its trailing newline (LF or CRLF) stripped, into
 * configuration memory, NUL-terminated as the client libraries want it.
 */

static ngx_int_t
ngx_http_bytemark_read_secret(ngx_conf_t *cf, const char *directive,
    ngx_str_t *path, ngx_str_t *secret)
{
    u_char           *buf;
    size_t            size, len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         full;
    ngx_int_t         rc;
    ngx_err_t         err;
    ngx_file_info_t   fi;

    full = *path;

    if (ngx_conf_full_name(cf->cycle, &full, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(full.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%s\" cannot open \"%s\"", directive, full.data);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    buf = NULL;
    size = 0;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%s\" cannot stat \"%s\"", directive, full.data);
        goto done;
    }

    if (!ngx_is_file(&fi)
        || ngx_file_size(&fi) > NGX_HTTP_BYTEMARK_SECRET_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" \"%s\" is not a regular file of at most "
                           "%d bytes", directive, full.data,
                           NGX_HTTP_BYTEMARK_SECRET_MAX);
        goto done;
    }

    size = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, size);
    err = ngx_errno;

    if (n == -1 || (size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, n == -1 ? err : 0,
                           "\"%s\" cannot read \"%s\"", directive, full.data);
        goto done;
    }

    len = size;

    if (ngx_http_bytemark_secret_line(cf, directive, &full, buf, &len)
        != NGX_OK)
    {
        goto done;
    }

    buf[len] = '\0';

    secret->data = buf;
    secret->len = len;
    rc = NGX_OK;

done:

    if (rc != NGX_OK && buf) {
        ngx_explicit_memzero(buf, size);
    }

    (void) ngx_close_file(fd);

    return rc;
}


static ngx_int_t
ngx_http_bytemark_secret_line(ngx_conf_t *cf, const char *directive,
    ngx_str_t *path, u_char *buf, size_t *len)
{
    size_t  i, n;

    n = *len;

    if (n && buf[n - 1] == '\n') {
        n--;

        if (n && buf[n - 1] == '\r') {
            n--;
        }
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" \"%s\" is empty", directive, path->data);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%s\" \"%s\" must hold one line (the "
                               "secret, and at most a newline)",
                               directive, path->data);
            return NGX_ERROR;
        }
    }

    *len = n;

    return NGX_OK;
}
