
/*
 * Checks shared by the BSON targets: what a lookup does with an answer
 * (filter by status, find a pass, render with sorted keys) must work on
 * whatever entry_from_bson() accepted, and keep its invariants.
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


/* the response's rendering (response.c: JSON_COMPACT | JSON_SORT_KEYS) */

static void
bytemark_fuzz_render(json_t *passes)
{
    char          *dump;
    json_t        *back;
    json_error_t   jerr;

    dump = json_dumps(passes, JSON_COMPACT | JSON_SORT_KEYS);
    FUZZ_CHECK(dump != NULL, "an accepted pass array cannot be rendered");

    back = json_loads(dump, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    FUZZ_CHECK(back != NULL, "the rendering is not JSON: %s (%s)",
               jerr.text, dump);
    FUZZ_CHECK(json_equal(back, passes), "the rendering does not read back "
               "as the same value: %s", dump);

    json_decref(back);
    free(dump);
}


static void
bytemark_fuzz_filter(json_t *passes, ngx_pool_t *pool)
{
    size_t                       i, k, expect;
    json_t                      *pass, *st, *out;
    ngx_str_t                   *s;
    ngx_uint_t                   j, hit;
    ngx_http_bytemark_filter_t   f;

    /* no status filter: the very same array, one more reference */
    f.statuses = NULL;
    f.versions = NGX_HTTP_BYTEMARK_V3 | NGX_HTTP_BYTEMARK_V4;

    out = ngx_http_bytemark_filter_passes(passes, &f);
    FUZZ_CHECK(out == passes, "an unfiltered array is not returned as is");
    json_decref(out);

    /* statuses taken from the passes themselves (at most 3), plus one more */
    f.statuses = ngx_array_create(pool, 4, sizeof(ngx_str_t));
    FUZZ_CHECK(f.statuses != NULL, "out of memory");

    json_array_foreach(passes, i, pass) {
        if (f.statuses->nelts == 3) {
            break;
        }

        st = json_object_get(pass, "status");
        if (!json_is_string(st)) {
            continue;
        }

        s = ngx_array_push(f.statuses);
        s->data = (u_char *) json_string_value(st);
        s->len = json_string_length(st);
    }

    s = ngx_array_push(f.statuses);
    ngx_str_set(s, "no-such-status");

    expect = 0;

    json_array_foreach(passes, i, pass) {
        st = json_object_get(pass, "status");
        if (!json_is_string(st)) {
            continue;
        }

        s = f.statuses->elts;

        for (j = 0; j < f.statuses->nelts; j++) {
            if (s[j].len == json_string_length(st)
                && memcmp(s[j].data, json_string_value(st), s[j].len) == 0)
            {
                expect++;
                break;
            }
        }
    }

    out = ngx_http_bytemark_filter_passes(passes, &f);
    FUZZ_CHECK(out != NULL, "filter_passes failed");
    FUZZ_CHECK(json_array_size(out) == expect, "filter kept %zu, not %zu",
               json_array_size(out), expect);

    json_array_foreach(out, k, pass) {
        st = json_object_get(pass, "status");
        FUZZ_CHECK(json_is_string(st), "a kept pass has no string status");

        hit = 0;
        s = f.statuses->elts;

        for (j = 0; j < f.statuses->nelts; j++) {
            if (s[j].len == json_string_length(st)
                && memcmp(s[j].data, json_string_value(st), s[j].len) == 0)
            {
                hit = 1;
            }
        }

        FUZZ_CHECK(hit, "a kept pass has a status not asked for");
    }

    bytemark_fuzz_render(out);
    json_decref(out);
}


static void
bytemark_fuzz_find(ngx_http_bytemark_answer_t *a, json_t *passes)
{
    size_t       i, n;
    u_char       uuid[NGX_HTTP_BYTEMARK_UUID_LEN];
    json_t      *pass, *id, *found, *fid;
    ngx_str_t    s;
    ngx_uint_t   version;

    n = 0;

    json_array_foreach(passes, i, pass) {
        if (n++ == 4) {
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

        version = 0;
        found = ngx_http_bytemark_find_pass(a, uuid, &version);
        FUZZ_CHECK(found != NULL, "a pass with a canonical uuid is not found");
        FUZZ_CHECK(version == 3 || version == 4, "version %u",
                   (unsigned) version);

        fid = json_object_get(found, "pass_uuid");
        FUZZ_CHECK(json_is_string(fid)
                   && json_string_length(fid) == NGX_HTTP_BYTEMARK_UUID_LEN
                   && ngx_strncasecmp((u_char *) json_string_value(fid), uuid,
                                      NGX_HTTP_BYTEMARK_UUID_LEN) == 0,
                   "find_pass returned another pass");
    }
}


void
bytemark_fuzz_exercise_answer(ngx_http_bytemark_answer_t *a)
{
    size_t        i;
    json_t       *arrays[2], *pass;
    ngx_uint_t    k;
    ngx_pool_t   *pool;

    arrays[0] = a->passes;
    arrays[1] = a->passes4;

    pool = ngx_create_pool(4096, &bytemark_fuzz_log);
    FUZZ_CHECK(pool != NULL, "out of memory");

    for (k = 0; k < 2; k++) {
        FUZZ_CHECK(json_is_array(arrays[k]), "an accepted entry lacks an array");

        json_array_foreach(arrays[k], i, pass) {
            FUZZ_CHECK(json_is_object(pass), "an accepted entry has a pass "
                       "that is not an object");
        }

        bytemark_fuzz_render(arrays[k]);
        bytemark_fuzz_filter(arrays[k], pool);
        bytemark_fuzz_find(a, arrays[k]);
    }

    /* a uuid no test document uses */
    (void) ngx_http_bytemark_find_pass(a,
                        (u_char *) "ffffffff-ffff-ffff-ffff-fffffffffff0", NULL);

    ngx_destroy_pool(pool);
}
