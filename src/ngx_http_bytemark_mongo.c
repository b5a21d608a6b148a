
/*
 * MongoDB: one mongoc_client_pool_t per worker, created after fork (its
 * monitor threads would not survive fork()), and the operations the pool
 * threads run: the cache lookup and the cache fill.
 *
 * The driver's own timeouts are bounded by defaults added to the URI when
 * the operator did not set them, so that a thread stuck in the driver is
 * released in bounded time even after its request was answered.
 */


#include "ngx_http_bytemark_module.h"

#include <mongoc/mongoc.h>


#define NGX_HTTP_BYTEMARK_MONGO_CONNECT_MS    1000
#define NGX_HTTP_BYTEMARK_MONGO_SOCKET_MS     3000
#define NGX_HTTP_BYTEMARK_MONGO_SELECTION_MS  1000
#define NGX_HTTP_BYTEMARK_MONGO_HEARTBEAT_MS  2000


struct ngx_http_bytemark_mongo_s {
    mongoc_uri_t          *uri;
    mongoc_client_pool_t  *pool;
    char                  *db;
    char                  *coll;
    /* from bson_new(): a bson_t wants 128-byte alignment, pools give less */
    bson_t                *projection;
};


static mongoc_uri_t *ngx_http_bytemark_mongo_uri(ngx_str_t *s,
    bson_error_t *error);
static void ngx_http_bytemark_mongo_default(mongoc_uri_t *uri,
    const char *option, int32_t value);
static void ngx_http_bytemark_mongo_error(ngx_http_bytemark_call_t *call,
    bson_error_t *error);
static void ngx_http_bytemark_mongo_log(mongoc_log_level_t level,
    const char *domain, const char *message, void *data);


ngx_int_t
ngx_http_bytemark_mongo_check_uri(ngx_str_t *uri, char *err, size_t size)
{
    mongoc_uri_t  *u;
    bson_error_t   error;

    u = ngx_http_bytemark_mongo_uri(uri, &error);
    if (u == NULL) {
        ngx_cpystrn((u_char *) err, (u_char *) error.message, size);
        return NGX_ERROR;
    }

    mongoc_uri_destroy(u);

    return NGX_OK;
}


static mongoc_uri_t *
ngx_http_bytemark_mongo_uri(ngx_str_t *s, bson_error_t *error)
{
    char          *cstr;
    mongoc_uri_t  *uri;

    cstr = bson_strndup((const char *) s->data, s->len);

    uri = mongoc_uri_new_with_error(cstr, error);

    bson_free(cstr);

    return uri;
}


ngx_int_t
ngx_http_bytemark_mongo_init_process(ngx_cycle_t *cycle,
    ngx_http_bytemark_main_conf_t *bmcf)
{
    bson_error_t                error;
    ngx_http_bytemark_mongo_t  *mongo;

    mongoc_init();
    mongoc_log_set_handler(ngx_http_bytemark_mongo_log, NULL);

    mongo = ngx_pcalloc(cycle->pool, sizeof(ngx_http_bytemark_mongo_t));
    if (mongo == NULL) {
        return NGX_ERROR;
    }

    mongo->uri = ngx_http_bytemark_mongo_uri(&bmcf->mongo_uri, &error);
    if (mongo->uri == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: invalid MongoDB URI: %s", error.message);
        return NGX_ERROR;
    }

    ngx_http_bytemark_mongo_default(mongo->uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                    NGX_HTTP_BYTEMARK_MONGO_CONNECT_MS);
    ngx_http_bytemark_mongo_default(mongo->uri, MONGOC_URI_SOCKETTIMEOUTMS,
                                    NGX_HTTP_BYTEMARK_MONGO_SOCKET_MS);
    ngx_http_bytemark_mongo_default(mongo->uri,
                                    MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                    NGX_HTTP_BYTEMARK_MONGO_SELECTION_MS);
    ngx_http_bytemark_mongo_default(mongo->uri,
                                    MONGOC_URI_HEARTBEATFREQUENCYMS,
                                    NGX_HTTP_BYTEMARK_MONGO_HEARTBEAT_MS);

    if (!mongoc_uri_has_option(mongo->uri, MONGOC_URI_APPNAME)) {
        mongoc_uri_set_appname(mongo->uri, "ngx_http_bytemark");
    }

    mongo->pool = mongoc_client_pool_new(mongo->uri);
    if (mongo->pool == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "bytemark: cannot create the MongoDB client pool");
        mongoc_uri_destroy(mongo->uri);
        return NGX_ERROR;
    }

    mongoc_client_pool_set_error_api(mongo->pool, MONGOC_ERROR_API_VERSION_2);

    mongo->db = bson_strndup((const char *) bmcf->mongo_db.data,
                             bmcf->mongo_db.len);
    mongo->coll = bson_strndup((const char *) bmcf->mongo_coll.data,
                               bmcf->mongo_coll.len);

    /* built once: lookups never need the operation logs */
    mongo->projection = bson_new();
    BSON_APPEND_INT32(mongo->projection, "passesLog", 0);
    BSON_APPEND_INT32(mongo->projection, "passes4Log", 0);

    bmcf->mongo = mongo;

    return NGX_OK;
}


static void
ngx_http_bytemark_mongo_default(mongoc_uri_t *uri, const char *option,
    int32_t value)
{
    if (!mongoc_uri_has_option(uri, option)) {
        mongoc_uri_set_option_as_int32(uri, option, value);
    }
}


void
ngx_http_bytemark_mongo_exit_process(ngx_http_bytemark_main_conf_t *bmcf)
{
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = bmcf->mongo;
    if (mongo == NULL) {
        return;
    }

    bmcf->mongo = NULL;

    mongoc_client_pool_destroy(mongo->pool);
    mongoc_uri_destroy(mongo->uri);
    bson_free(mongo->db);
    bson_free(mongo->coll);
    bson_destroy(mongo->projection);

    mongoc_cleanup();
}


/* thread: findOne({user_id}) without the log arrays */

void
ngx_http_bytemark_mongo_find(ngx_http_bytemark_call_t *call)
{
    bson_t                      filter, opts;
    const bson_t               *doc;
    bson_error_t                error;
    mongoc_client_t            *client;
    mongoc_cursor_t            *cursor;
    mongoc_collection_t        *coll;
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = call->bmcf->mongo;

    client = mongoc_client_pool_pop(mongo->pool);
    coll = mongoc_client_get_collection(client, mongo->db, mongo->coll);

    /* MongoDB compares numbers across types: int64 finds int32 and double */
    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);

    bson_init(&opts);
    BSON_APPEND_DOCUMENT(&opts, "projection", mongo->projection);
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_BOOL(&opts, "singleBatch", true);

    cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);

    if (mongoc_cursor_next(cursor, &doc)) {
        if (ngx_http_bytemark_entry_from_bson(doc, &call->answer, call->error,
                                              sizeof(call->error))
            == NGX_OK)
        {
            call->answer.result = NGX_HTTP_BYTEMARK_FOUND;

        } else {
            ngx_http_bytemark_answer_release(&call->answer);
            call->answer.result = NGX_HTTP_BYTEMARK_MALFORMED;
        }

    } else if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_bytemark_mongo_error(call, &error);

    } else {
        call->answer.result = NGX_HTTP_BYTEMARK_NOT_FOUND;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(mongo->pool, client);
}


/*
 * thread: rewrite the entry from a MySQL answer.
 *
 * The filter matches only an entry older than the MySQL read (or without a
 * timestamp), so a newer one written meanwhile is never overwritten: then
 * the upsert tries to insert a second document for the user and the unique
 * index on user_id refuses it, which is the expected outcome, not an error.
 */

void
ngx_http_bytemark_mongo_fill(ngx_http_bytemark_call_t *call)
{
    bson_t                      filter, update, or, clause, cmp, set, unset,
                                opts;
    bson_error_t                error;
    mongoc_client_t            *client;
    mongoc_collection_t        *coll;
    ngx_http_bytemark_mongo_t  *mongo;

    mongo = call->bmcf->mongo;

    bson_init(&filter);
    BSON_APPEND_INT64(&filter, "user_id", (int64_t) call->user_id);
    BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "0", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "timestamp", &cmp);
    BSON_APPEND_INT64(&cmp, "$lt", call->fill_timestamp);
    bson_append_document_end(&clause, &cmp);
    bson_append_document_end(&or, &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&or, "1", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "timestamp", &cmp);
    BSON_APPEND_BOOL(&cmp, "$exists", false);
    bson_append_document_end(&clause, &cmp);
    bson_append_document_end(&or, &clause);
    bson_append_array_end(&filter, &or);

    bson_init(&update);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
    BSON_APPEND_INT64(&set, "user_id", (int64_t) call->user_id);
    BSON_APPEND_INT64(&set, "timestamp", call->fill_timestamp);

    if (ngx_http_bytemark_json_to_bson(&set, "passes", call->fill_passes, 0)
        != NGX_OK
        || ngx_http_bytemark_json_to_bson(&set, "passes4",
                                          call->fill_passes4, 0)
           != NGX_OK)
    {
        snprintf(call->error, sizeof(call->error),
                 "passes cannot be converted to BSON");
        bson_destroy(&update);
        bson_destroy(&filter);
        return;
    }

    bson_append_document_end(&update, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&update, "$unset", &unset);
    BSON_APPEND_UTF8(&unset, "bytemark_incomplete", "");
    bson_append_document_end(&update, &unset);

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "upsert", true);

    client = mongoc_client_pool_pop(mongo->pool);
    coll = mongoc_client_get_collection(client, mongo->db, mongo->coll);

    if (!mongoc_collection_update_one(coll, &filter, &update, &opts, NULL,
                                      &error)
        && error.code != MONGOC_ERROR_DUPLICATE_KEY)
    {
        ngx_http_bytemark_mongo_error(call, &error);
    }

    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(mongo->pool, client);

    bson_destroy(&opts);
    bson_destroy(&update);
    bson_destroy(&filter);
}


static void
ngx_http_bytemark_mongo_error(ngx_http_bytemark_call_t *call,
    bson_error_t *error)
{
    call->answer.result = NGX_HTTP_BYTEMARK_FAILED;

    snprintf(call->error, sizeof(call->error), "%s (domain %u, code %u)",
             error->message, error->domain, error->code);
}


/*
 * The driver logs from its monitor threads too; its warnings and errors go
 * to nginx's error log (as nginx's own thread code logs), the chatter below
 * that is dropped.
 */

static void
ngx_http_bytemark_mongo_log(mongoc_log_level_t level, const char *domain,
    const char *message, void *data)
{
    ngx_uint_t  nlevel;

    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        nlevel = NGX_LOG_ERR;
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        nlevel = NGX_LOG_WARN;
        break;
    default:
        return;
    }

    ngx_log_error(nlevel, ngx_cycle->log, 0, "bytemark: mongoc %s: %s",
                  domain, message);
}
