
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Checks shared by the targets, differential: src/'s read path (json.c,
 * render.c) against the old one kept in reference.c, a jansson tree dumped
 * with JSON_COMPACT | JSON_SORT_KEYS.
 *
 * For a cache document: entry_from_bson() accepts it iff the old one did;
 * then each pass array's text is byte for byte the old dump ("[]" when
 * absent), each item's text the dump of its pass, each item's status and
 * uuid what the old filters and pass lookups saw in the tree (a string of
 * at most 32 bytes, a string of 36 bytes; the last of duplicate keys), and
 * filter_passes() / find_pass() give what the old ones gave.  And every
 * top-level value renders (render_bson) iff the old converter converted it,
 * to the old dump.  Where src/ departs from the old code on purpose,
 * reference.c says so (DIVERGENCE) and BYTEMARK_FUZZ_STRICT=1 holds src/ to
 * the old code anyway.
 */

#include "fuzz.h"


int
bytemark_fuzz_utf8(const char *s, size_t len)
{
    json_t  *v;

    v = json_stringn(s, len);
    if (v == NULL) {
        return 0;
    }

    json_decref(v);
    return 1;
}


/* a text for the report: printable ASCII as is, the rest escaped, cut */

static void
bytemark_fuzz_show(const char *name, const u_char *s, size_t len)
{
    size_t  i, max;

    max = 3000;

    fprintf(stderr, "  %s (%zu bytes): ", name, len);

    if (s == NULL) {
        fprintf(stderr, "(none)\n");
        return;
    }

    for (i = 0; i < len && i < max; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\') {
            fputc(s[i], stderr);

        } else {
            fprintf(stderr, "\\x%02x", s[i]);
        }
    }

    fprintf(stderr, "%s\n", len > max ? "..." : "");
}


void
bytemark_fuzz_mismatch(const char *file, int line, const char *what,
    const u_char *got, size_t got_len, const char *want, size_t want_len)
{
    size_t  i;

    for (i = 0; got && want && i < got_len && i < want_len; i++) {
        if (got[i] != (u_char) want[i]) {
            break;
        }
    }

    fprintf(stderr, "fuzz invariant failed at %s:%d: %s: src/ and the "
            "reference differ (first at byte %zu)\n", file, line, what, i);
    bytemark_fuzz_show("src/     ", got, got_len);
    bytemark_fuzz_show("reference", (const u_char *) want, want_len);
    abort();
}


/* what the old code saw in the pass (a jansson object) */

static void
bytemark_fuzz_check_item(ngx_http_bytemark_passes_t *list, ngx_uint_t i,
    json_t *pass, const char *what)
{
    char                      *dump;
    size_t                     len;
    json_t                    *v;
    ngx_http_bytemark_item_t  *item;

    item = &list->items[i];

    FUZZ_CHECK(item->start + item->len <= list->text.len
               && item->start >= 1, "%s[%u]: item out of its text",
               what, (unsigned) i);

    dump = bytemark_ref_dump(pass, 0);
    FUZZ_SAME_TEXT("a pass's text", list->text.data + item->start, item->len,
                   dump);
    free(dump);

    /*
     * status: a string of at most 32 bytes; whatever BSON type the old
     * converter made a string of (a symbol, a date, an ObjectId...)
     */
    v = json_object_get(pass, "status");
    len = json_string_length(v);

    if (json_is_string(v) && len <= NGX_HTTP_BYTEMARK_STATUS_MAX) {
        FUZZ_CHECK(item->has_status, "%s[%u]: the pass's \"status\" is the "
                   "string \"%.*s\" (%zu bytes), but the item has no status",
                   what, (unsigned) i, (int) len, json_string_value(v), len);
        FUZZ_CHECK(item->status_len == len
                   && memcmp(item->status, json_string_value(v), len) == 0,
                   "%s[%u]: the item's status \"%.*s\" is not the pass's "
                   "\"%.*s\"", what, (unsigned) i, (int) item->status_len,
                   item->status, (int) len, json_string_value(v));

    } else {
        FUZZ_CHECK(!item->has_status, "%s[%u]: the item has a status "
                   "\"%.*s\" the pass has not (%s)", what, (unsigned) i,
                   (int) item->status_len, item->status,
                   v ? "not a short string" : "no status");
    }

    /* pass_uuid: a string of 36 bytes */
    v = json_object_get(pass, "pass_uuid");
    len = json_string_length(v);

    if (json_is_string(v) && len == NGX_HTTP_BYTEMARK_UUID_LEN) {
        FUZZ_CHECK(item->has_uuid, "%s[%u]: the pass's \"pass_uuid\" is the "
                   "string \"%.*s\", but the item has no uuid", what,
                   (unsigned) i, (int) len, json_string_value(v));
        FUZZ_CHECK(memcmp(item->uuid, json_string_value(v), len) == 0,
                   "%s[%u]: the item's uuid \"%.36s\" is not the pass's "
                   "\"%.36s\"", what, (unsigned) i, item->uuid,
                   json_string_value(v));

    } else {
        FUZZ_CHECK(!item->has_uuid, "%s[%u]: the item has a uuid \"%.36s\" "
                   "the pass has not", what, (unsigned) i, item->uuid);
    }
}


void
bytemark_fuzz_check_list(ngx_http_bytemark_passes_t *list, json_t *ref,
    const char *what)
{
    char        *dump;
    size_t       i;
    ngx_str_t    text;

    FUZZ_CHECK(json_is_array(ref), "%s: the reference is not an array", what);

    ngx_http_bytemark_passes_text(list, &text);

    dump = bytemark_ref_dump(ref, 0);
    FUZZ_SAME_TEXT(what, text.data, text.len, dump);
    free(dump);

    FUZZ_CHECK(list->n == json_array_size(ref), "%s: %u items for %zu "
               "passes", what, (unsigned) list->n, json_array_size(ref));

    for (i = 0; i < list->n; i++) {
        FUZZ_CHECK(json_is_object(json_array_get(ref, i)), "%s[%zu]: an "
                   "accepted pass is not an object", what, i);
        bytemark_fuzz_check_item(list, i, json_array_get(ref, i), what);
    }
}


/* a status ?status= can ask for (input.c): 1-32 bytes, no control bytes */

static int
bytemark_fuzz_askable(json_t *v)
{
    size_t         i, len;
    const u_char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = (const u_char *) json_string_value(v);
    len = json_string_length(v);

    if (len == 0 || len > NGX_HTTP_BYTEMARK_STATUS_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


static void
bytemark_fuzz_filter(ngx_http_bytemark_passes_t *list, json_t *ref,
    ngx_array_t *statuses, ngx_pool_t *pool)
{
    char                        *dump;
    json_t                      *out;
    ngx_str_t                    text, whole;
    ngx_http_bytemark_filter_t   f;

    f.versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;

    /* no status filter: the list's own text, not a copy */
    f.statuses = NULL;

    FUZZ_CHECK(ngx_http_bytemark_filter_passes(list, &f, pool, &text)
               == NGX_OK, "filter_passes failed without a filter");

    ngx_http_bytemark_passes_text(list, &whole);
    FUZZ_CHECK(text.len == whole.len && text.data == whole.data,
               "an unfiltered array is not returned as is");

    /* statuses asked for */
    f.statuses = statuses;

    FUZZ_CHECK(ngx_http_bytemark_filter_passes(list, &f, pool, &text)
               == NGX_OK, "filter_passes failed");

    out = bytemark_ref_filter(ref, statuses);
    FUZZ_CHECK(out != NULL, "out of memory");

    dump = bytemark_ref_dump(out, 0);
    FUZZ_SAME_TEXT("a filtered array", text.data, text.len, dump);

    free(dump);
    json_decref(out);
}


/* find_pass() against the old one, for a uuid as parse_uuid() gives it */

static void
bytemark_fuzz_find_one(ngx_http_bytemark_answer_t *a,
    bytemark_ref_entry_t *ref, u_char *uuid)
{
    size_t                     ri;
    json_t                    *rpass;
    ngx_uint_t                 version, rversion;
    ngx_http_bytemark_item_t  *item;

    rversion = 0;
    ri = 0;
    rpass = bytemark_ref_find(ref->passes, uuid, &rversion, &ri);

    version = 0;
    item = ngx_http_bytemark_find_pass(a, uuid, &version);

    FUZZ_CHECK((item != NULL) == (rpass != NULL), "find_pass(%.36s) %s, but "
               "the old lookup %s", uuid, item ? "found a pass" : "found none",
               rpass ? "found one" : "found none");

    FUZZ_CHECK(ngx_http_bytemark_find_pass(a, uuid, NULL) == item,
               "find_pass without a version returned another pass");

    if (item == NULL) {
        return;
    }

    FUZZ_CHECK(version == rversion, "find_pass(%.36s): version %u, the old "
               "lookup %u", uuid, (unsigned) version, (unsigned) rversion);
    FUZZ_CHECK(item == &a->passes[version == 4].items[ri],
               "find_pass(%.36s) returned pass #%ld of version %u, the old "
               "lookup #%zu", uuid,
               (long) (item - a->passes[version == 4].items),
               (unsigned) version, ri);
}


static void
bytemark_fuzz_find(ngx_http_bytemark_answer_t *a, bytemark_ref_entry_t *ref)
{
    size_t       i;
    u_char       uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    json_t      *pass, *id;
    ngx_str_t    s;
    ngx_uint_t   k;

    for (k = 0; k < 2; k++) {
        json_array_foreach(ref->passes[k], i, pass) {
            if (i == 4) {
                break;
            }

            id = json_object_get(pass, "pass_uuid");
            if (!json_is_string(id)) {
                continue;
            }

            s.data = (u_char *) json_string_value(id);
            s.len = json_string_length(id);

            if (ngx_http_bytemark_parse_uuid(&s, uuid) != NGX_OK) {
                continue;
            }

            bytemark_fuzz_find_one(a, ref, uuid);
        }
    }

    /* a uuid no test document uses */
    bytemark_fuzz_find_one(a, ref,
                           (u_char *) "ffffffff-ffff-ffff-ffff-fffffffffff0");
}


/* what a lookup does with an accepted answer */

static void
bytemark_fuzz_exercise(ngx_http_bytemark_answer_t *a,
    bytemark_ref_entry_t *ref)
{
    size_t        i;
    json_t       *pass, *st;
    ngx_str_t    *s;
    ngx_uint_t    k;
    ngx_pool_t   *pool;
    ngx_array_t  *statuses;

    pool = ngx_create_pool(4096, &bytemark_fuzz_log);
    FUZZ_CHECK(pool != NULL, "out of memory");

    /* statuses taken from the passes themselves (at most 4), plus one more */
    statuses = ngx_array_create(pool, 5, sizeof(ngx_str_t));
    FUZZ_CHECK(statuses != NULL, "out of memory");

    for (k = 0; k < 2; k++) {
        json_array_foreach(ref->passes[k], i, pass) {
            if (statuses->nelts == 4) {
                break;
            }

            st = json_object_get(pass, "status");
            if (!bytemark_fuzz_askable(st)) {
                continue;
            }

            s = ngx_array_push(statuses);
            s->data = (u_char *) json_string_value(st);
            s->len = json_string_length(st);
        }
    }

    s = ngx_array_push(statuses);
    ngx_str_set(s, "no-such-status");

    for (k = 0; k < 2; k++) {
        bytemark_fuzz_check_list(&a->passes[k], ref->passes[k],
                                 k ? "passes4" : "passes");
        bytemark_fuzz_filter(&a->passes[k], ref->passes[k], statuses, pool);
    }

    bytemark_fuzz_find(a, ref);

    ngx_destroy_pool(pool);
}


void
bytemark_fuzz_check_document(const bson_t *doc)
{
    char                         err[640], *dump;
    json_t                      *v;
    ngx_int_t                    rc, rrc;
    bson_iter_t                  it;
    bytemark_ref_entry_t         ref;
    ngx_http_bytemark_jbuf_t     b;
    ngx_http_bytemark_answer_t   a;

    /* the entry */

    rrc = bytemark_ref_entry(doc, &ref);

    ngx_memzero(&a, sizeof(ngx_http_bytemark_answer_t));
    memset(err, 0x55, sizeof(err));
    err[0] = '\0';

    rc = ngx_http_bytemark_entry_from_bson(doc, &a, err, sizeof(err));

    FUZZ_CHECK(rc == NGX_OK || rc == NGX_ERROR, "entry_from_bson: %d",
               (int) rc);

    if (rc != NGX_OK) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL,
                   "the error is not terminated");
        FUZZ_CHECK(err[0] != '\0', "a failure without a cause");
    }

    FUZZ_CHECK((rc == NGX_OK) == (rrc == NGX_OK), "entry_from_bson %s (%s), "
               "the old one %s", rc == NGX_OK ? "accepts the document"
                                              : "refuses the document",
               rc == NGX_OK ? "-" : err,
               rrc == NGX_OK ? "accepted it" : "refused it");

    if (rc == NGX_OK) {
        FUZZ_CHECK(a.has_timestamp == ref.has_timestamp
                   && (!a.has_timestamp || a.timestamp == ref.timestamp),
                   "timestamp %lld (%u), the old one %lld (%u)",
                   (long long) a.timestamp, (unsigned) a.has_timestamp,
                   (long long) ref.timestamp, (unsigned) ref.has_timestamp);
        FUZZ_CHECK(a.incomplete == ref.incomplete, "incomplete %u, the old "
                   "one %u", (unsigned) a.incomplete,
                   (unsigned) ref.incomplete);

        bytemark_fuzz_exercise(&a, &ref);
    }

    /* what call.c's answer_release() does */
    ngx_http_bytemark_passes_free(&a.passes[0]);
    ngx_http_bytemark_passes_free(&a.passes[1]);
    bytemark_ref_entry_free(&ref);

    /* every value type, at the top level too */

    if (!bson_iter_init(&it, doc)) {
        return;
    }

    while (bson_iter_next(&it)) {
        ngx_memzero(&b, sizeof(ngx_http_bytemark_jbuf_t));

        rc = ngx_http_bytemark_render_bson(&b, &it, 0);
        v = bytemark_ref_bson_to_json(&it, 0);

        FUZZ_CHECK(rc == NGX_OK || rc == NGX_DECLINED, "render_bson(\"%s\"): "
                   "%d", bson_iter_key(&it), (int) rc);
        FUZZ_CHECK((rc == NGX_OK) == (v != NULL), "render_bson(\"%s\") %s, "
                   "the old converter %s", bson_iter_key(&it),
                   rc == NGX_OK ? "renders it" : "declines it",
                   v ? "converts it" : "does not");

        if (v) {
            dump = bytemark_ref_dump(v, JSON_ENCODE_ANY);
            FUZZ_CHECK(dump != NULL, "a converted value cannot be rendered");
            FUZZ_SAME_TEXT("a top-level value", b.data, b.len, dump);
            free(dump);
            json_decref(v);
        }

        ngx_http_bytemark_jbuf_free(&b);
    }
}
