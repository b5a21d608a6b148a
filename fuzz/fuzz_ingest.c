
/*
 * Target fuzz_ingest: the input is an ingest request body (SPEC 3.3), given
 * to ngx_http_bytemark_parse_ingest() as the handler does.
 *
 * Checked on every input: a refusal has a message that is valid UTF-8 (it is
 * sent to the client in a JSON body) and terminated within its buffer. On
 * success every pass holds what the writes rely on: a lower-case canonical
 * uuid, version 3 or 4, free_ticket_status in -128..127, timestamp >= 0, a
 * status of 1-32 characters without control characters, a payload_hash of
 * 1-64 bytes of UTF-8, the payload as canonical JSON (or NULL for null) and
 * nested no deeper than MariaDB's JSON column accepts (31 levels),
 * and a pass object that the cache writes (ingest and fill) can store and a
 * cache read can render back (json_to_bson(), then entry_from_bson() on the
 * entry the write would produce).
 */

#include "fuzz.h"


#define NOW_MS  1732200000000LL

/*
 * MariaDB's JSON column (CHECK json_valid) refuses a document nested 32
 * levels or deeper: a payload the parser accepts must not be deeper, or the
 * client's valid-looking body ends in a failing MySQL write (a 5xx).
 */
#define MARIADB_JSON_DEPTH  31


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    bytemark_fuzz_init();
    return 0;
}


static size_t
json_depth(json_t *v)
{
    size_t       i, d, max;
    json_t      *e;
    const char  *k;

    if (!json_is_array(v) && !json_is_object(v)) {
        return 0;
    }

    max = 0;

    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            d = json_depth(e);
            max = d > max ? d : max;
        }

    } else {
        json_object_foreach(v, k, e) {
            d = json_depth(e);
            max = d > max ? d : max;
        }
    }

    return max + 1;
}


/* numbers compare by value: a JSON real 2.0 comes back from BSON as 2 */

static int
loose_equal(json_t *a, json_t *b)
{
    size_t       i;
    json_t      *va;
    const char  *k;

    if (json_is_number(a) && json_is_number(b)) {
        return json_number_value(a) == json_number_value(b)
               || (json_is_integer(a) && json_is_integer(b)
                   && json_integer_value(a) == json_integer_value(b));
    }

    if (json_typeof(a) != json_typeof(b)) {
        return 0;
    }

    switch (json_typeof(a)) {

    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b)) {
            return 0;
        }

        json_object_foreach(a, k, va) {
            if (!loose_equal(va, json_object_get(b, k))) {
                return 0;
            }
        }

        return 1;

    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) {
            return 0;
        }

        json_array_foreach(a, i, va) {
            if (!loose_equal(va, json_array_get(b, i))) {
                return 0;
            }
        }

        return 1;

    default:
        return json_equal(a, b);
    }
}


/*
 * What mongo.c's ingest writes ($push of the pass object, converted with
 * json_to_bson(..., 0)) must be readable by the next lookup: the entry
 * {passes: [pass]} through entry_from_bson().
 */

static void
check_cache_roundtrip(ngx_http_bytemark_ingest_pass_t *p)
{
    char                         err[640];
    bson_t                       entry, arr;
    json_t                      *back;
    ngx_int_t                    rc;
    ngx_http_bytemark_answer_t   a;

    bson_init(&entry);
    bson_append_array_begin(&entry, p->version == 4 ? "passes4" : "passes",
                            -1, &arr);
    rc = ngx_http_bytemark_json_to_bson(&arr, "0", p->object, 0);

    if (rc != NGX_OK) {
        /*
         * refused (too deep to store): nothing reaches the cache; the
         * callers in mongo.c destroy the document with its containers
         * still open, and so does this
         */
        bson_destroy(&entry);
        return;
    }

    bson_append_array_end(&entry, &arr);

    ngx_memzero(&a, sizeof(ngx_http_bytemark_answer_t));
    err[0] = '\0';

    rc = ngx_http_bytemark_entry_from_bson(&entry, &a, err, sizeof(err));

    FUZZ_CHECK(rc == NGX_OK, "the cache entry an ingest writes cannot be "
               "read back: %s", err);

    back = json_array_get(p->version == 4 ? a.passes4 : a.passes, 0);
    FUZZ_CHECK(back != NULL && loose_equal(p->object, back),
               "the pass read back from the cache differs");

    json_decref(a.passes);
    json_decref(a.passes4);
    bson_destroy(&entry);
}


/*
 * And the fill (mongo.c): after a MySQL answer, {$set: {passes: [...]}} with
 * json_to_bson(&set, "passes", passes, 0); the pass as MySQL renders it is
 * the same object.
 */

static void
check_fill_roundtrip(ngx_http_bytemark_ingest_pass_t *p)
{
    char                         err[640];
    bson_t                       entry;
    json_t                      *arr;
    ngx_int_t                    rc;
    ngx_http_bytemark_answer_t   a;

    arr = json_array();
    json_array_append(arr, p->object);

    bson_init(&entry);
    rc = ngx_http_bytemark_json_to_bson(&entry, "passes", arr, 0);
    json_decref(arr);

    if (rc != NGX_OK) {
        bson_destroy(&entry);
        return;
    }

    ngx_memzero(&a, sizeof(ngx_http_bytemark_answer_t));
    err[0] = '\0';

    rc = ngx_http_bytemark_entry_from_bson(&entry, &a, err, sizeof(err));

    FUZZ_CHECK(rc == NGX_OK, "the cache entry a fill writes cannot be read "
               "back: %s", err);
    FUZZ_CHECK(loose_equal(p->object, json_array_get(a.passes, 0)),
               "the pass read back from a filled entry differs");

    json_decref(a.passes);
    json_decref(a.passes4);
    bson_destroy(&entry);
}


static void
check_pass(ngx_http_bytemark_ingest_pass_t *p)
{
    size_t         i, len, chars;
    u_char         again[NGX_HTTP_BYTEMARK_UUID_LEN];
    char          *dump;
    json_t        *v;
    ngx_str_t      s;
    json_error_t   jerr;
    const u_char  *st;

    s.data = p->uuid;
    s.len = NGX_HTTP_BYTEMARK_UUID_LEN;
    FUZZ_CHECK(ngx_http_bytemark_parse_uuid(&s, again) == NGX_OK
               && memcmp(again, p->uuid, NGX_HTTP_BYTEMARK_UUID_LEN) == 0,
               "uuid not canonical lower case: %.36s", p->uuid);

    FUZZ_CHECK(p->version == 3 || p->version == 4, "version %u",
               (unsigned) p->version);
    FUZZ_CHECK(p->free_ticket_status >= -128 && p->free_ticket_status <= 127,
               "free_ticket_status %d", (int) p->free_ticket_status);
    FUZZ_CHECK(p->timestamp >= 0, "timestamp %lld", (long long) p->timestamp);

    FUZZ_CHECK(p->status != NULL, "no status");
    st = (const u_char *) p->status;
    len = strlen(p->status);
    FUZZ_CHECK(bytemark_fuzz_utf8(p->status, len), "status not UTF-8");

    for (i = 0, chars = 0; i < len; i++) {
        FUZZ_CHECK(st[i] >= 0x20 && st[i] != 0x7f, "control character in "
                   "status");
        chars += ((st[i] & 0xc0) != 0x80);
    }

    FUZZ_CHECK(chars >= 1 && chars <= NGX_HTTP_BYTEMARK_STATUS_MAX,
               "status of %zu characters", chars);

    len = strnlen(p->payload_hash, sizeof(p->payload_hash));
    FUZZ_CHECK(len >= 1 && len <= 64, "payload_hash of %zu bytes", len);
    FUZZ_CHECK(bytemark_fuzz_utf8(p->payload_hash, len),
               "payload_hash not UTF-8");

    if (p->payload) {
        v = json_loads(p->payload, JSON_DECODE_ANY, &jerr);
        FUZZ_CHECK(v != NULL, "stored payload is not JSON: %s", jerr.text);
        FUZZ_CHECK(!json_is_null(v), "a null payload is not stored as NULL");

        dump = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        FUZZ_CHECK(dump && strcmp(dump, p->payload) == 0,
                   "stored payload is not canonical");
        free(dump);

        FUZZ_CHECK(json_equal(v, json_object_get(p->object, "payload")),
                   "payload column and cache object differ");
        json_decref(v);

        FUZZ_CHECK(json_depth(json_object_get(p->object, "payload"))
                   <= MARIADB_JSON_DEPTH, "an accepted payload is nested "
                   "%zu levels deep: MariaDB's JSON column refuses it",
                   json_depth(json_object_get(p->object, "payload")));

    } else {
        FUZZ_CHECK(json_is_null(json_object_get(p->object, "payload")),
                   "SQL NULL payload for a non-null value");
    }

    FUZZ_CHECK(json_is_object(p->object) && json_object_size(p->object) == 6,
               "the cache object has not the six pass fields");

    dump = json_dumps(p->object, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(dump != NULL, "the pass object cannot be rendered");
    free(dump);

    check_cache_roundtrip(p);
    check_fill_roundtrip(p);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                              err[512];
    uint8_t                          *buf;
    ngx_int_t                         rc;
    ngx_uint_t                        i, n;
    ngx_http_bytemark_ingest_pass_t  *passes;

    bytemark_fuzz_init();

    /* an exact-size copy, not NUL-terminated, like a request body buffer */
    buf = malloc(size ? size : 1);
    memcpy(buf, data, size);

    memset(err, 0x55, sizeof(err));

    rc = ngx_http_bytemark_parse_ingest(buf, size, 100, NOW_MS, &passes, &n,
                                        err, sizeof(err));

    if (rc != NGX_OK) {
        FUZZ_CHECK(passes == NULL && n == 0, "a failure returned passes");
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL,
                   "the error is not terminated");
        FUZZ_CHECK(err[0] != '\0', "a failure without a message");
        FUZZ_CHECK(bytemark_fuzz_utf8(err, strlen(err)),
                   "the error message is not UTF-8: %s", err);
        free(buf);
        return 0;
    }

    FUZZ_CHECK(passes != NULL && n >= 1 && n <= 100, "%u passes",
               (unsigned) n);

    for (i = 0; i < n; i++) {
        check_pass(&passes[i]);
    }

    ngx_http_bytemark_ingest_passes_free(passes, n);

    /* the batch limit */
    if (n > 3) {
        rc = ngx_http_bytemark_parse_ingest(buf, size, 3, NOW_MS, &passes, &n,
                                            err, sizeof(err));
        FUZZ_CHECK(rc != NGX_OK, "a batch over the limit was accepted");
        FUZZ_CHECK(passes == NULL, "a refused batch returned passes");
    }

    free(buf);

    return 0;
}
