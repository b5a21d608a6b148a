
/*
 * Target fuzz_bson: arbitrary bytes as a cache document.
 *
 * The bytes go to bson_init_static() as they are, except that the length
 * prefix is set to the input's size (otherwise almost every mutation would
 * die at the first check); the seeds are real documents written by pymongo.
 * Then what a MongoDB lookup does with a document (mongo.c):
 * ngx_http_bytemark_entry_from_bson(), and on success the pass helpers and
 * the rendering (common.c); and ngx_http_bytemark_bson_to_json() on every
 * top-level element, whatever its key.
 */

#include "fuzz.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    bytemark_fuzz_init();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                         err[640], *dump;
    bson_t                       doc;
    json_t                      *v;
    uint8_t                     *buf;
    uint32_t                     len;
    bson_iter_t                  it;
    ngx_http_bytemark_answer_t   a;

    bytemark_fuzz_init();

    if (size < 5 || size > 16 * 1024 * 1024) {
        return 0;
    }

    /* an exact-size copy: ASan sees any read past the end */
    buf = malloc(size);
    memcpy(buf, data, size);
    len = (uint32_t) size;
    memcpy(buf, &len, 4);    /* little-endian, as BSON */

    if (!bson_init_static(&doc, buf, size)) {
        free(buf);
        return 0;
    }

    ngx_memzero(&a, sizeof(ngx_http_bytemark_answer_t));
    memset(err, 0x55, sizeof(err));
    err[0] = '\0';

    if (ngx_http_bytemark_entry_from_bson(&doc, &a, err, sizeof(err))
        == NGX_OK)
    {
        bytemark_fuzz_exercise_answer(&a);

    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL,
                   "the error is not terminated");
        FUZZ_CHECK(err[0] != '\0', "a failure without a cause");
    }

    if (a.passes) {
        json_decref(a.passes);
    }

    if (a.passes4) {
        json_decref(a.passes4);
    }

    /* every value type, at the top level too */
    if (bson_iter_init(&it, &doc)) {
        while (bson_iter_next(&it)) {
            v = ngx_http_bytemark_bson_to_json(&it, 0);
            if (v == NULL) {
                continue;
            }

            dump = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS
                                 | JSON_ENCODE_ANY);
            FUZZ_CHECK(dump != NULL, "a converted value cannot be rendered");
            free(dump);
            json_decref(v);
        }
    }

    free(buf);

    return 0;
}
