
/*
 * Copyright (C) 2026 The ngx_http_bytemark_module authors
 * SPDX-License-Identifier: BSD-2-Clause (see LICENSE)
 */

/*
 * Target fuzz_bson_struct: valid BSON built from the input, so that the
 * mutations reach the conversion code instead of libbson's checks.
 *
 * The input is a little program: each opcode byte appends one element (or
 * opens or closes a document or an array) with a key taken from a
 * dictionary of the cache schema's field names, or from the input itself.
 * Values come from the bytes that follow (strings may be invalid UTF-8 and
 * hold NULs; doubles may be NaN, huge or negative zero; nesting goes past
 * the converter's depth limit). Containers left open are closed at the end,
 * and the document goes through what fuzz_bson runs (common.c: src/'s read
 * path against the old one, reference.c).
 */

#include "fuzz.h"


#define MAX_STACK  96


static const char *keys[] = {
    "passes", "passes4", "timestamp", "user_id", "bytemark_incomplete",
    "pass_uuid", "status", "payload", "payload_hash", "free_ticket_status",
    "passesLog", "passes4Log", "_id", "version", "$gt", "$where", "",
    "a.b", "\xc3\xa9t\xc3\xa9"
};

#define NKEYS  (sizeof(keys) / sizeof(keys[0]))


typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} reader_t;


static uint8_t
rd_u8(reader_t *r)
{
    return r->p < r->end ? *r->p++ : 0;
}


static void
rd_bytes(reader_t *r, void *out, size_t n)
{
    size_t  have;

    have = (size_t) (r->end - r->p);
    if (have > n) {
        have = n;
    }

    memset(out, 0, n);
    memcpy(out, r->p, have);
    r->p += have;
}


/* a byte string of up to 255 bytes, copied NUL-terminated into buf */

static size_t
rd_str(reader_t *r, char *buf, int cstring)
{
    size_t  n, i;

    n = rd_u8(r);
    if ((size_t) (r->end - r->p) < n) {
        n = (size_t) (r->end - r->p);
    }

    memcpy(buf, r->p, n);
    r->p += n;
    buf[n] = '\0';

    if (cstring) {
        for (i = 0; i < n; i++) {
            if (buf[i] == '\0') {
                buf[i] = 'x';
            }
        }
    }

    return n;
}


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
    int                          top, is_array[MAX_STACK];
    char                         kbuf[300], sbuf[300], sbuf2[300], idx[16];
    bson_t                       stack[MAX_STACK], *cur;
    bson_oid_t                   oid;
    const char                  *key;
    uint8_t                      op, kb, bin[256];
    uint32_t                     count[MAX_STACK], u32;
    uint64_t                     u64;
    int64_t                      i64;
    double                       d;
    size_t                       n;
    bson_decimal128_t            dec;
    bson_t                       scope;
    reader_t                     r;

    bytemark_fuzz_init();

    r.p = data;
    r.end = data + size;

    top = 0;
    bson_init(&stack[0]);
    is_array[0] = 0;
    count[0] = 0;

    while (r.p < r.end) {
        op = rd_u8(&r);
        cur = &stack[top];

        if (op % 32 == 6) {
            /* close the innermost container */
            if (top > 0) {
                if (is_array[top]) {
                    bson_append_array_end(&stack[top - 1], &stack[top]);
                } else {
                    bson_append_document_end(&stack[top - 1], &stack[top]);
                }

                top--;
            }

            continue;
        }

        /* the key */
        kb = rd_u8(&r);

        if (kb >= 0xf0) {
            rd_str(&r, kbuf, 1);
            key = kbuf;

        } else if (is_array[top] && kb < 0x80) {
            snprintf(idx, sizeof(idx), "%u", (unsigned) count[top]);
            key = idx;

        } else {
            key = keys[kb % NKEYS];
        }

        count[top]++;

        switch (op % 32) {

        case 0:
            rd_bytes(&r, &d, sizeof(d));
            bson_append_double(cur, key, -1, d);
            break;

        case 1:
            rd_bytes(&r, &u32, sizeof(u32));
            bson_append_int32(cur, key, -1, (int32_t) u32);
            break;

        case 2:
            rd_bytes(&r, &u64, sizeof(u64));
            bson_append_int64(cur, key, -1, (int64_t) u64);
            break;

        case 3:
            n = rd_str(&r, sbuf, 0);
            bson_append_utf8(cur, key, -1, sbuf, (int) n);
            break;

        case 4:
        case 5:
            if (top + 1 >= MAX_STACK) {
                break;
            }

            if (!(op % 32 == 4
                  ? bson_append_document_begin(cur, key, -1, &stack[top + 1])
                  : bson_append_array_begin(cur, key, -1, &stack[top + 1])))
            {
                break;
            }

            top++;
            is_array[top] = (op % 32 == 5);
            count[top] = 0;
            break;

        case 7:
            bson_append_bool(cur, key, -1, rd_u8(&r) & 1);
            break;

        case 8:
            bson_append_null(cur, key, -1);
            break;

        case 9:
            rd_bytes(&r, &i64, sizeof(i64));
            bson_append_date_time(cur, key, -1, i64);
            break;

        case 10:
            rd_bytes(&r, &oid, sizeof(oid));
            bson_append_oid(cur, key, -1, &oid);
            break;

        case 11:
            rd_bytes(&r, &dec, sizeof(dec));
            bson_append_decimal128(cur, key, -1, &dec);
            break;

        case 12:
            kb = rd_u8(&r);
            n = rd_u8(&r);
            rd_bytes(&r, bin, n);
            bson_append_binary(cur, key, -1,
                               (kb & 1) ? BSON_SUBTYPE_BINARY
                                        : (bson_subtype_t) (kb & 0x8f),
                               bin, (uint32_t) n);
            break;

        case 13:
            rd_str(&r, sbuf, 1);
            rd_str(&r, sbuf2, 1);
            bson_append_regex(cur, key, -1, sbuf, sbuf2);
            break;

        case 14:
            rd_str(&r, sbuf, 1);
            bson_append_code(cur, key, -1, sbuf);
            break;

        case 15:
            n = rd_str(&r, sbuf, 0);
            bson_append_symbol(cur, key, -1, sbuf, (int) n);
            break;

        case 16:
            rd_bytes(&r, &u64, sizeof(u64));
            bson_append_timestamp(cur, key, -1, (uint32_t) (u64 >> 32),
                                  (uint32_t) u64);
            break;

        case 17:
            bson_append_minkey(cur, key, -1);
            break;

        case 18:
            bson_append_maxkey(cur, key, -1);
            break;

        case 19:
            bson_append_undefined(cur, key, -1);
            break;

        case 20:
            rd_str(&r, sbuf, 1);
            rd_bytes(&r, &oid, sizeof(oid));
            bson_append_dbpointer(cur, key, -1, sbuf, &oid);
            break;

        case 21:
            rd_str(&r, sbuf, 1);
            bson_init(&scope);
            bson_append_int32(&scope, "x", 1, 1);
            bson_append_code_with_scope(cur, key, -1, sbuf, &scope);
            bson_destroy(&scope);
            break;

        case 22:
            /* a canonical uuid, mixed case, so that find_pass can hit */
            kb = rd_u8(&r);
            snprintf(sbuf, sizeof(sbuf), (kb & 0x80)
                     ? "%08X-0000-4000-8000-%012X"
                     : "%08x-0000-4000-8000-%012x",
                     (unsigned) (kb & 7), (unsigned) (kb & 7));
            bson_append_utf8(cur, key, -1, sbuf, -1);
            break;

        case 23:
            /* a status a filter may ask for */
            kb = rd_u8(&r);
            bson_append_utf8(cur, key, -1,
                             (kb & 3) == 0 ? "active"
                             : (kb & 3) == 1 ? "expired"
                             : (kb & 3) == 2 ? "used" : "", -1);
            break;

        case 24:
            /* doubles that matter: integral, huge, tiny, special */
            kb = rd_u8(&r);
            switch (kb % 8) {
            case 0: d = 1732200000000.0; break;
            case 1: d = 9007199254740993.0; break;
            case 2: d = -9007199254740992.0; break;
            case 3: d = 1e300; break;
            case 4: d = -1e19; break;
            case 5: d = 0.0 / 0.0; break;
            case 6: d = -0.0; break;
            default: d = 1.0 / 0.0; break;
            }
            bson_append_double(cur, key, -1, d);
            break;

        default:
            /* int64 extremes */
            kb = rd_u8(&r);
            i64 = (kb & 1) ? INT64_MIN : INT64_MAX;
            if (kb & 2) {
                i64 = (kb & 1) ? -1 : 0;
            }
            bson_append_int64(cur, key, -1, i64);
            break;
        }
    }

    while (top > 0) {
        if (is_array[top]) {
            bson_append_array_end(&stack[top - 1], &stack[top]);
        } else {
            bson_append_document_end(&stack[top - 1], &stack[top]);
        }

        top--;
    }

    bytemark_fuzz_check_document(&stack[0]);

    bson_destroy(&stack[0]);

    return 0;
}
