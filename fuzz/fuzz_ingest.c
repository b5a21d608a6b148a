
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

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
 * and a pass that has the same bytes from every source: the dump of the
 * pass object ingest built is what a MySQL read renders from the row
 * (passes_add_row()) and what a cache read renders from the entries an
 * ingest and a fill write (json_to_bson(), then entry_from_bson()).
 *
 * And, differential against the old read path (reference.c), on every
 * input: the bytes as a MySQL payload column (render_payload(), and
 * json_canonical() never calling canonical a text that is not exactly its
 * old rendering), and rows cut from the bytes (passes_add_row()).
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


/*
 * MySQL's side (mysql.c, json.c's passes_add_row(), render.c's
 * render_payload()): the payload column as the old read path rendered it,
 * json_loadb(JSON_DECODE_ANY | JSON_ALLOW_NUL), json_normalize(), then
 * json_dumps(JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY); text that is
 * not JSON as a JSON string; text that is not UTF-8 either has no JSON form
 * (NGX_DECLINED: the row leaves the key out).  And the fast path: whenever
 * json_canonical() says the text is canonical, it is that very dump.
 */

static void
check_payload(const u_char *text, size_t len)
{
    char                      *dump;
    json_t                    *ref;
    ngx_int_t                  rc;
    ngx_uint_t                 canonical;
    ngx_http_bytemark_jbuf_t   b;

    ref = bytemark_ref_payload(text, len);
    dump = bytemark_ref_dump(ref, JSON_ENCODE_ANY);
    FUZZ_CHECK(ref == NULL || dump != NULL, "the old payload has no dump");

    canonical = ngx_http_bytemark_json_canonical(text, len);

    if (canonical) {
        FUZZ_SAME_TEXT("a payload json_canonical() calls canonical", text,
                       len, dump);
    }

    ngx_memzero(&b, sizeof(ngx_http_bytemark_jbuf_t));

    /* something before it, as in a row */
    FUZZ_CHECK(ngx_http_bytemark_jbuf_add(&b, "{\"payload\":", 11) == NGX_OK,
               "out of memory");

    rc = ngx_http_bytemark_render_payload(&b, text, len);

    if (ref == NULL) {
        FUZZ_CHECK(rc == NGX_DECLINED, "render_payload: %d for a payload "
                   "that is neither JSON nor UTF-8", (int) rc);

    } else {
        FUZZ_CHECK(rc == NGX_OK, "render_payload: %d for a payload the old "
                   "path rendered", (int) rc);
        FUZZ_SAME_TEXT("a rendered payload", b.data + 11, b.len - 11, dump);
    }

    ngx_http_bytemark_jbuf_free(&b);
    free(dump);

    if (ref) {
        json_decref(ref);
    }
}


/*
 * A cache fill writes the rows as BSON (rows.c): byte for byte what the
 * module wrote before, when it parsed the rendered list back (json_loadb(),
 * json_to_bson()); and it fails where that failed.
 */

static void
check_fill(ngx_http_bytemark_pass_row_t *rows, ngx_uint_t n,
    ngx_http_bytemark_passes_t *list)
{
    json_t                    *v;
    bson_t                     now, old;
    ngx_str_t                  text;
    ngx_int_t                  rc, orc;
    ngx_uint_t                 i;
    json_error_t               jerr;
    ngx_http_bytemark_rows_t   kept;

    ngx_memzero(&kept, sizeof(ngx_http_bytemark_rows_t));

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(ngx_http_bytemark_rows_add(&kept, &rows[i]) == NGX_OK,
                   "out of memory");
    }

    bson_init(&now);
    rc = ngx_http_bytemark_rows_to_bson(&now, "passes", &kept);
    ngx_http_bytemark_rows_free(&kept);

    ngx_http_bytemark_passes_text(list, &text);
    v = json_loadb((const char *) text.data, text.len, JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(v != NULL, "rendered rows are not JSON: %s", jerr.text);

    bson_init(&old);
    orc = ngx_http_bytemark_json_to_bson(&old, "passes", v, 0);
    json_decref(v);

    FUZZ_CHECK(rc == orc, "a fill from the rows %s, from their text %s",
               rc == NGX_OK ? "works" : "fails",
               orc == NGX_OK ? "works" : "fails");

    if (rc == NGX_OK) {
        FUZZ_CHECK(now.len == old.len
                   && memcmp(bson_get_data(&now), bson_get_data(&old),
                             now.len) == 0,
                   "a fill from the rows is not the BSON of their text");
    }

    bson_destroy(&old);
    bson_destroy(&now);
}


/*
 * Rows into a list (the tickets query): passes_add_row() fails iff the old
 * json_pack() did (a uuid or status that is not UTF-8), and the list is the
 * dump of the old objects.
 */

static void
check_rows(ngx_http_bytemark_pass_row_t *rows, ngx_uint_t n)
{
    json_t                      *ref, *obj;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_http_bytemark_passes_t   list;

    ngx_memzero(&list, sizeof(ngx_http_bytemark_passes_t));

    ref = json_array();
    FUZZ_CHECK(ref != NULL, "out of memory");

    for (i = 0; i < n; i++) {
        obj = bytemark_ref_row(&rows[i]);
        rc = ngx_http_bytemark_passes_add_row(&list, &rows[i]);

        FUZZ_CHECK((rc == NGX_OK) == (obj != NULL), "passes_add_row %s row "
                   "%u, the old json_pack() %s", rc == NGX_OK ? "takes"
                                                           : "refuses",
                   (unsigned) i, obj ? "packed it" : "did not");

        if (obj == NULL) {
            /* the list is left half-written: the caller releases it */
            goto done;
        }

        json_array_append_new(ref, obj);
    }

    FUZZ_CHECK(ngx_http_bytemark_passes_close(&list) == NGX_OK,
               "out of memory");

    bytemark_fuzz_check_list(&list, ref, "rows");
    check_fill(rows, n, &list);

done:

    ngx_http_bytemark_passes_free(&list);
    json_decref(ref);
}


/* rows of arbitrary bytes, from the input */

static void
check_input_rows(const uint8_t *data, size_t size)
{
    size_t                        n;
    ngx_http_bytemark_pass_row_t  rows[2];

    static u_char  empty[1];

    ngx_memzero(rows, sizeof(rows));

    /* a plausible row: the payload NULL, the status from the input */
    ngx_str_set(&rows[0].uuid, "00000000-0000-4000-8000-00000000000a");
    rows[0].status.data = size ? (u_char *) data : empty;
    rows[0].status.len = size < 40 ? size : (size_t) data[size - 1] % 40;
    rows[0].timestamp = INT64_MIN;
    rows[0].free_ticket_status = -128;

    /* the input as the payload; uuid, status and hash cut from it */
    n = size < NGX_HTTP_BYTEMARK_UUID_LEN ? size : NGX_HTTP_BYTEMARK_UUID_LEN;
    rows[1].uuid.data = size ? (u_char *) data : empty;
    rows[1].uuid.len = n;
    rows[1].status.data = size ? (u_char *) data + size / 2 : empty;
    rows[1].status.len = (size - size / 2) < 33 ? size - size / 2 : 33;
    rows[1].payload.data = size ? (u_char *) data : empty;
    rows[1].payload.len = size;
    n = size < 64 ? size : 64;
    rows[1].hash.data = size ? (u_char *) data + size - n : empty;
    rows[1].hash.len = n;
    rows[1].timestamp = (int64_t) size * 1000003 - 7;
    rows[1].free_ticket_status = size ? (int8_t) data[0] : 0;

    check_rows(rows, 2);
}


/*
 * The same pass has the same bytes from every source (render.c): as MySQL
 * renders its row, as a cache entry an ingest wrote ($push of p->object,
 * json_to_bson()), and as the entry a fill writes from the MySQL rows
 * (rows.c's rows_to_bson()).  All three are the dump of p->object, the
 * pass as ingest built it.  And the fill's BSON is byte for byte what the
 * module wrote before it had rows.c: the rendered answer parsed back
 * (json_loadb(), json_to_bson()).
 */

static void
read_entry(bson_t *entry, ngx_uint_t k, const char *want, const char *what)
{
    char                         err[640];
    ngx_str_t                    text;
    ngx_int_t                    rc;
    ngx_http_bytemark_answer_t   a;

    bytemark_fuzz_check_document(entry);

    ngx_memzero(&a, sizeof(ngx_http_bytemark_answer_t));
    err[0] = '\0';

    rc = ngx_http_bytemark_entry_from_bson(entry, &a, err, sizeof(err));
    FUZZ_CHECK(rc == NGX_OK, "the cache entry %s cannot be read back: %s",
               what, err);
    FUZZ_CHECK(a.passes[k].n == 1 && a.passes[1 - k].n == 0,
               "the entry %s has not its one pass", what);

    ngx_http_bytemark_passes_text(&a.passes[k], &text);
    FUZZ_SAME_TEXT(what, text.data, text.len, want);

    ngx_http_bytemark_passes_free(&a.passes[0]);
    ngx_http_bytemark_passes_free(&a.passes[1]);
}


static void
check_sources(ngx_http_bytemark_ingest_pass_t *p)
{
    char                          *dump, *want;
    json_t                        *v;
    bson_t                         entry, arr, old;
    size_t                         len;
    ngx_str_t                      text;
    ngx_int_t                      rc, orc;
    ngx_uint_t                     k;
    json_error_t                   jerr;
    ngx_http_bytemark_jbuf_t       b;
    ngx_http_bytemark_rows_t       rows;
    ngx_http_bytemark_passes_t     list;
    ngx_http_bytemark_pass_row_t   row;

    k = (p->version == 4);

    dump = json_dumps(p->object, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(dump != NULL, "the pass object cannot be rendered");

    len = strlen(dump);
    want = malloc(len + 3);
    FUZZ_CHECK(want != NULL, "out of memory");
    want[0] = '[';
    memcpy(want + 1, dump, len);
    want[len + 1] = ']';
    want[len + 2] = '\0';

    /* the payload column renders as written */
    if (p->payload) {
        check_payload((u_char *) p->payload, strlen(p->payload));

        ngx_memzero(&b, sizeof(ngx_http_bytemark_jbuf_t));
        rc = ngx_http_bytemark_render_payload(&b, (u_char *) p->payload,
                                              strlen(p->payload));
        FUZZ_CHECK(rc == NGX_OK, "a stored payload cannot be rendered");
        FUZZ_SAME_TEXT("a stored payload, read back", b.data, b.len,
                       p->payload);
        ngx_http_bytemark_jbuf_free(&b);
    }

    /* MySQL: the row the ingest writes */
    ngx_memzero(&row, sizeof(ngx_http_bytemark_pass_row_t));
    row.uuid.data = p->uuid;
    row.uuid.len = NGX_HTTP_BYTEMARK_UUID_LEN;
    row.status.data = (u_char *) p->status;
    row.status.len = strlen(p->status);
    row.payload.data = (u_char *) p->payload;
    row.payload.len = p->payload ? strlen(p->payload) : 0;
    row.hash.data = (u_char *) p->payload_hash;
    row.hash.len = strlen(p->payload_hash);
    row.timestamp = p->timestamp;
    row.free_ticket_status = p->free_ticket_status;

    check_rows(&row, 1);

    ngx_memzero(&list, sizeof(ngx_http_bytemark_passes_t));
    FUZZ_CHECK(ngx_http_bytemark_passes_add_row(&list, &row) == NGX_OK
               && ngx_http_bytemark_passes_close(&list) == NGX_OK,
               "an ingested pass's row cannot be rendered");

    ngx_http_bytemark_passes_text(&list, &text);
    FUZZ_SAME_TEXT("the pass from MySQL", text.data, text.len, want);

    /* the cache entry an ingest writes (its timestamp from the $max) */
    bson_init(&entry);
    BSON_APPEND_INT64(&entry, "timestamp", p->timestamp);
    bson_append_array_begin(&entry, k ? "passes4" : "passes", -1, &arr);
    rc = ngx_http_bytemark_json_to_bson(&arr, "0", p->object, 0);

    /*
     * refused (too deep to store): nothing reaches the cache; the callers
     * in mongo.c destroy the document with its containers still open, and
     * so does this
     */
    if (rc == NGX_OK) {
        bson_append_array_end(&entry, &arr);
        read_entry(&entry, k, want, "from the cache (ingest)");
    }

    bson_destroy(&entry);

    /* the entry a fill writes from the MySQL row */
    ngx_memzero(&rows, sizeof(ngx_http_bytemark_rows_t));
    FUZZ_CHECK(ngx_http_bytemark_rows_add(&rows, &row) == NGX_OK,
               "an ingested pass's row cannot be kept");

    bson_init(&entry);
    BSON_APPEND_INT64(&entry, "timestamp", p->timestamp);
    rc = ngx_http_bytemark_rows_to_bson(&entry, k ? "passes4" : "passes",
                                        &rows);
    ngx_http_bytemark_rows_free(&rows);

    /* and the one the fill wrote from the answer's text, parsed back */
    v = json_loadb((const char *) text.data, text.len, JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(v != NULL, "a MySQL answer's text is not JSON: %s",
               jerr.text);

    bson_init(&old);
    BSON_APPEND_INT64(&old, "timestamp", p->timestamp);
    orc = ngx_http_bytemark_json_to_bson(&old, k ? "passes4" : "passes", v,
                                         0);
    json_decref(v);

    FUZZ_CHECK(rc == orc, "a fill from the row %s, from the text %s",
               rc == NGX_OK ? "works" : "fails",
               orc == NGX_OK ? "works" : "fails");

    if (rc == NGX_OK) {
        FUZZ_CHECK(entry.len == old.len
                   && memcmp(bson_get_data(&entry), bson_get_data(&old),
                             entry.len) == 0,
                   "a fill from the row is not the BSON parsed from its "
                   "text");
        read_entry(&entry, k, want, "from the cache (fill)");
    }

    bson_destroy(&old);
    bson_destroy(&entry);

    ngx_http_bytemark_passes_free(&list);
    free(want);
    free(dump);
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

    check_sources(p);
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

    /* the bytes as a MySQL payload column, and as rows */
    check_payload(buf, size);
    check_input_rows(buf, size);

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
