
/*
 * bytemark_mysql_batch: how many MySQL lookups one query may answer
 * (src/mysql/ngx_http_bytemark_mysql_batch.c).
 */


#include "ngx_http_bytemark_http.h"


/*
 * bytemark_mysql_batch <n>: lookups one MySQL query answers (1: one query
 * per lookup); 256, the largest IN list a connection keeps prepared
 */

char *
ngx_http_bytemark_set_mysql_batch(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_bytemark_main_conf_t *bmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (bmcf->mysql_batch != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    n = ngx_atoi(value[1].data, value[1].len);

    if (n < 1 || n > 256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"bytemark_mysql_batch\" must be a number "
                           "from 1 to 256, not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    bmcf->mysql_batch = n;

    return NGX_CONF_OK;
}
