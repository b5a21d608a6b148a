
/*
 * The canonical JSON writer: the text a response carries, written once,
 * in the pool thread, straight from the cache document's BSON or from a
 * MySQL row.  No jansson tree is built on the read path and nothing is
 * serialized on the event loop.
 *
 * Canonical means byte for byte what jansson's json_dumps() with
 * JSON_COMPACT | JSON_SORT_KEYS writes for the same value after the
 * JavaScript-style number normalization (json.c): keys sorted bytewise,
 * the last of duplicate keys kept, "\uXXXX" (upper case) for the control
 * characters without a short escape, reals as "%.17g".  Ingest writes and
 * hashes with jansson, so a pass has the same bytes, and the same ETag,
 * whichever source answers.  fuzz/ checks the equivalence.
 */


#include "ngx_http_bytemark_module.h"

#include <bson/bson.h>



/* members sorted on the stack; larger documents sort on the heap */
#define NGX_HTTP_BYTEMARK_MEMBERS      16

/* a real's text: "%.17g" needs at most 24 bytes */
#define NGX_HTTP_BYTEMARK_REAL_LEN     32


typedef struct {
    const char                   *key;
    size_t                        len;
    ngx_uint_t                    pos;        /* in the document */
    bson_iter_t                   it;
} ngx_http_bytemark_member_t;


static ngx_int_t ngx_http_bytemark_render_document(
    ngx_http_bytemark_jbuf_t *b, const bson_iter_t *it, ngx_uint_t depth,
    ngx_http_bytemark_item_t *item);
static ngx_int_t ngx_http_bytemark_render_members(
    ngx_http_bytemark_jbuf_t *b, ngx_http_bytemark_member_t *m,
    ngx_uint_t n, ngx_uint_t depth, ngx_http_bytemark_item_t *item);
static void ngx_http_bytemark_item_note(ngx_http_bytemark_item_t *item,
    const char *key, size_t klen, const u_char *v, size_t len);
static ngx_int_t ngx_http_bytemark_render_array(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth);
static void ngx_http_bytemark_sort_members(ngx_http_bytemark_member_t *m,
    ngx_uint_t n);
static int ngx_http_bytemark_member_cmp(const void *one, const void *two);
static ngx_int_t ngx_http_bytemark_key_cmp(ngx_http_bytemark_member_t *a,
    ngx_http_bytemark_member_t *b);
static size_t ngx_http_bytemark_plain_run(const u_char *s, size_t len);
static ssize_t ngx_http_bytemark_string_len(const u_char *s, size_t len);
static size_t ngx_http_bytemark_utf8_seq(const u_char *s, size_t len);
static ngx_int_t ngx_http_bytemark_render_double(ngx_http_bytemark_jbuf_t *b,
    double d);
static size_t ngx_http_bytemark_real_text(double d, char *buf);
static const u_char *ngx_http_bytemark_canon_value(const u_char *p,
    const u_char *end, ngx_uint_t depth);
static const u_char *ngx_http_bytemark_canon_string(const u_char *p,
    const u_char *end, ngx_uint_t key);
static const u_char *ngx_http_bytemark_canon_number(const u_char *p,
    const u_char *end);


/* growable malloc()ed text: pool threads have no nginx pool */

ngx_int_t
ngx_http_bytemark_jbuf_reserve(ngx_http_bytemark_jbuf_t *b, size_t n)
{
    size_t   size;
    u_char  *p;

    if (b->len + n <= b->size) {
        return NGX_OK;
    }

    size = b->size ? b->size : 1024;

    while (size < b->len + n) {
        size *= 2;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->data = p;
    b->size = size;

    return NGX_OK;
}


ngx_int_t
ngx_http_bytemark_jbuf_add(ngx_http_bytemark_jbuf_t *b, const void *data,
    size_t n)
{
    if (ngx_http_bytemark_jbuf_reserve(b, n) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(b->data + b->len, data, n);
    b->len += n;

    return NGX_OK;
}


void
ngx_http_bytemark_jbuf_free(ngx_http_bytemark_jbuf_t *b)
{
    free(b->data);
    ngx_memzero(b, sizeof(ngx_http_bytemark_jbuf_t));
}


static ngx_inline ngx_int_t
ngx_http_bytemark_jbuf_char(ngx_http_bytemark_jbuf_t *b, u_char c)
{
    if (b->len == b->size
        && ngx_http_bytemark_jbuf_reserve(b, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    b->data[b->len++] = c;

    return NGX_OK;
}


ngx_int_t
ngx_http_bytemark_render_int(ngx_http_bytemark_jbuf_t *b, int64_t n)
{
    u_char    digits[NGX_INT64_LEN], *d, *p;
    uint64_t  u;

    if (ngx_http_bytemark_jbuf_reserve(b, NGX_INT64_LEN + 1) != NGX_OK) {
        return NGX_ERROR;
    }

    /* unsigned: INT64_MIN has no positive counterpart */
    u = (n < 0) ? (uint64_t) 0 - (uint64_t) n : (uint64_t) n;

    d = digits + NGX_INT64_LEN;

    do {
        *--d = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    p = b->data + b->len;

    if (n < 0) {
        *p++ = '-';
    }

    p = ngx_cpymem(p, d, digits + NGX_INT64_LEN - d);
    b->len = p - b->data;

    return NGX_OK;
}


/*
 * A JSON string.  NGX_DECLINED when s is not valid UTF-8 (by jansson's
 * rules: no overlong forms, no surrogates, nothing past U+10FFFF).
 */

ngx_int_t
ngx_http_bytemark_render_string(ngx_http_bytemark_jbuf_t *b, const u_char *s,
    size_t len)
{
    u_char         c, *p;
    ssize_t        n;
    const u_char  *end;

    static u_char  hex[] = "0123456789ABCDEF";

    /* most strings need no escape: one scan, one copy */
    if (ngx_http_bytemark_plain_run(s, len) == len) {
        if (ngx_http_bytemark_jbuf_reserve(b, len + 2) != NGX_OK) {
            return NGX_ERROR;
        }

        p = b->data + b->len;
        *p++ = '"';
        p = ngx_cpymem(p, s, len);
        *p++ = '"';
        b->len = p - b->data;

        return NGX_OK;
    }

    n = ngx_http_bytemark_string_len(s, len);
    if (n < 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_bytemark_jbuf_reserve(b, n) != NGX_OK) {
        return NGX_ERROR;
    }

    p = b->data + b->len;
    *p++ = '"';

    for (end = s + len; s < end; s++) {
        c = *s;

        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = c;
            continue;
        }

        *p++ = '\\';

        switch (c) {
        case '"':  *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\b': *p++ = 'b'; break;
        case '\f': *p++ = 'f'; break;
        case '\n': *p++ = 'n'; break;
        case '\r': *p++ = 'r'; break;
        case '\t': *p++ = 't'; break;
        default:
            *p++ = 'u'; *p++ = '0'; *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    *p++ = '"';
    b->len = p - b->data;

    return NGX_OK;
}


/*
 * The length of the leading run of bytes written as they are: printable
 * ASCII but '"' and '\\'.  Eight bytes at a time: each test sets a byte's
 * high bit when that byte may stop the run (a false alarm only follows a
 * true one), and the last bytes are looked at one by one.
 */

static size_t
ngx_http_bytemark_plain_run(const u_char *s, size_t len)
{
    size_t    i;
    uint64_t  x, q, bs;

#define NGX_HTTP_BYTEMARK_ONES   0x0101010101010101ULL
#define NGX_HTTP_BYTEMARK_HIGHS  0x8080808080808080ULL

    for (i = 0; i + 8 <= len; i += 8) {
        ngx_memcpy(&x, s + i, 8);

        q = x ^ (NGX_HTTP_BYTEMARK_ONES * '"');
        bs = x ^ (NGX_HTTP_BYTEMARK_ONES * '\\');

        if ((((x - NGX_HTTP_BYTEMARK_ONES * 0x20) & ~x)
             | ((q - NGX_HTTP_BYTEMARK_ONES) & ~q)
             | ((bs - NGX_HTTP_BYTEMARK_ONES) & ~bs)
             | x)
            & NGX_HTTP_BYTEMARK_HIGHS)
        {
            break;
        }
    }

    while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"'
           && s[i] != '\\')
    {
        i++;
    }

    return i;
}


/* the escaped length, quotes included, or -1 for invalid UTF-8 */

static ssize_t
ngx_http_bytemark_string_len(const u_char *s, size_t len)
{
    size_t  i, n, out;
    u_char  c;

    out = 2;

    for (i = 0; i < len; /* void */) {
        c = s[i];

        if (c < 0x80) {
            if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n'
                || c == '\r' || c == '\t')
            {
                out += 2;

            } else {
                out += (c < 0x20) ? 6 : 1;
            }

            i++;
            continue;
        }

        n = ngx_http_bytemark_utf8_seq(s + i, len - i);
        if (n == 0) {
            return -1;
        }

        out += n;
        i += n;
    }

    return out;
}


/* the length of the UTF-8 sequence at s, 0 when it is not valid */

static size_t
ngx_http_bytemark_utf8_seq(const u_char *s, size_t len)
{
    size_t    n, i;
    uint32_t  v;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        v = s[0] & 0x1f;

    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        v = s[0] & 0x0f;

    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        v = s[0] & 0x07;

    } else {
        return 0;
    }

    if (n > len) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }

        v = (v << 6) | (s[i] & 0x3f);
    }

    if (v > 0x10ffff
        || (v >= 0xd800 && v <= 0xdfff)
        || (n == 3 && v < 0x800)
        || (n == 4 && v < 0x10000))
    {
        return 0;
    }

    return n;
}


/*
 * Numbers as JavaScript has them: a double that holds an integer (2.0,
 * -0.0, Date.now() from a JavaScript client) is that integer; JSON has no
 * NaN or infinity, so those are null.
 */

static ngx_int_t
ngx_http_bytemark_render_double(ngx_http_bytemark_jbuf_t *b, double d)
{
    char  buf[NGX_HTTP_BYTEMARK_REAL_LEN];

    if (d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0) {
        return ngx_http_bytemark_jbuf_add(b, "null", 4);
    }

    /* in range first: casting a larger double to int64_t is undefined */
    if (d <= 9007199254740992.0 && d >= -9007199254740992.0
        && d == (double) (int64_t) d)
    {
        return ngx_http_bytemark_render_int(b, (int64_t) d);
    }

    return ngx_http_bytemark_jbuf_add(b, buf,
                                      ngx_http_bytemark_real_text(d, buf));
}


/* jansson's jsonp_dtostr(): "%.17g", ".0" if needed, no "+" or leading
 * zeros in the exponent */

static size_t
ngx_http_bytemark_real_text(double d, char *buf)
{
    int    n;
    char  *e, *start, *digits;

    n = snprintf(buf, NGX_HTTP_BYTEMARK_REAL_LEN - 3, "%.17g", d);

    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        buf[n++] = '.';
        buf[n++] = '0';
        buf[n] = '\0';
    }

    e = strchr(buf, 'e');

    if (e) {
        start = e + 1;
        digits = start + 1;

        if (*start == '-') {
            start++;
        }

        while (*digits == '0') {
            digits++;
        }

        if (digits != start) {
            memmove(start, digits, buf + n + 1 - digits);
            n -= digits - start;
        }
    }

    return n;
}


/* one BSON value, as bson_to_json() in fuzz/reference.c would convert it */

ngx_int_t
ngx_http_bytemark_render_bson(ngx_http_bytemark_jbuf_t *b, const void *iter,
    ngx_uint_t depth)
{
    const bson_iter_t  *it = iter;

    char                 oid[25], iso[NGX_HTTP_BYTEMARK_ISO_LEN];
    uint32_t             len, ts, inc;
    ngx_int_t            rc;
    const char          *s, *opts;
    ngx_str_t            src, dst;
    const uint8_t       *bin;
    bson_subtype_t       subtype;
    bson_decimal128_t    dec;
    char                 decstr[BSON_DECIMAL128_STRING];

    switch (bson_iter_type(it)) {

    case BSON_TYPE_DOUBLE:
        return ngx_http_bytemark_render_double(b, bson_iter_double(it));

    case BSON_TYPE_INT32:
        return ngx_http_bytemark_render_int(b, bson_iter_int32(it));

    case BSON_TYPE_INT64:
        return ngx_http_bytemark_render_int(b, bson_iter_int64(it));

    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        break;

    case BSON_TYPE_CODE:
        s = bson_iter_code(it, &len);
        break;

    case BSON_TYPE_SYMBOL:
        s = bson_iter_symbol(it, &len);
        break;

    case BSON_TYPE_DOCUMENT:
        return ngx_http_bytemark_render_document(b, it, depth + 1, NULL);

    case BSON_TYPE_ARRAY:
        return ngx_http_bytemark_render_array(b, it, depth + 1);

    case BSON_TYPE_OID:
        bson_oid_to_string(bson_iter_oid(it), oid);
        return ngx_http_bytemark_render_string(b, (u_char *) oid, 24);

    case BSON_TYPE_DATE_TIME:
        ngx_http_bytemark_iso_time(bson_iter_date_time(it), iso);
        return ngx_http_bytemark_render_string(b, (u_char *) iso,
                                               ngx_strlen(iso));

    case BSON_TYPE_BOOL:
        return bson_iter_bool(it) ? ngx_http_bytemark_jbuf_add(b, "true", 4)
                                  : ngx_http_bytemark_jbuf_add(b, "false", 5);

    case BSON_TYPE_DECIMAL128:
        if (!bson_iter_decimal128(it, &dec)) {
            return NGX_DECLINED;
        }

        bson_decimal128_to_string(&dec, decstr);
        return ngx_http_bytemark_render_string(b, (u_char *) decstr,
                                               ngx_strlen(decstr));

    case BSON_TYPE_TIMESTAMP:
        /* {"t": ..., "i": ...}, keys sorted */
        bson_iter_timestamp(it, &ts, &inc);

        if (ngx_http_bytemark_jbuf_reserve(b, 2 * NGX_INT64_LEN + 16)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b->len = ngx_sprintf(b->data + b->len, "{\"i\":%uD,\"t\":%uD}",
                             inc, ts)
                 - b->data;
        return NGX_OK;

    case BSON_TYPE_BINARY:
        bson_iter_binary(it, &subtype, &len, &bin);

        src.data = (u_char *) bin;
        src.len = bin ? len : 0;

        if (ngx_http_bytemark_jbuf_reserve(b,
                ngx_base64_encoded_length(src.len) + 2)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        b->data[b->len++] = '"';
        dst.data = b->data + b->len;
        ngx_encode_base64(&dst, &src);
        b->len += dst.len;
        b->data[b->len++] = '"';
        return NGX_OK;

    case BSON_TYPE_REGEX:
        /* {"$regex": ..., "$options": ...}, keys sorted */
        s = bson_iter_regex(it, &opts);

        if (s == NULL || opts == NULL) {
            return NGX_DECLINED;
        }

        if (ngx_http_bytemark_jbuf_add(b, "{\"$options\":", 12) != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_string(b, (u_char *) opts,
                                             ngx_strlen(opts));
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_http_bytemark_jbuf_add(b, ",\"$regex\":", 10) != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_string(b, (u_char *) s, ngx_strlen(s));
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_bytemark_jbuf_char(b, '}');

    default:
        /* null, undefined, minkey, maxkey, dbpointer, code with scope */
        return ngx_http_bytemark_jbuf_add(b, "null", 4);
    }

    /* the string types */

    if (s == NULL) {
        return NGX_DECLINED;
    }

    return ngx_http_bytemark_render_string(b, (u_char *) s, len);
}


/*
 * A document with its keys sorted.  With item, a pass object: its
 * "status" and "pass_uuid" are noted for filters and pass lookups.
 */

static ngx_int_t
ngx_http_bytemark_render_document(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth, ngx_http_bytemark_item_t *item)
{
    ngx_int_t                    rc;
    ngx_uint_t                   n, size;
    bson_iter_t                  child;
    ngx_http_bytemark_member_t  *m, *heap, stack[NGX_HTTP_BYTEMARK_MEMBERS];

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH || !bson_iter_recurse(it, &child))
    {
        return NGX_DECLINED;
    }

    m = stack;
    heap = NULL;
    size = NGX_HTTP_BYTEMARK_MEMBERS;
    n = 0;

    while (bson_iter_next(&child)) {

        if (n == size) {
            size *= 2;
            m = realloc(heap, size * sizeof(ngx_http_bytemark_member_t));
            if (m == NULL) {
                free(heap);
                return NGX_ERROR;
            }

            if (heap == NULL) {
                ngx_memcpy(m, stack, sizeof(stack));
            }

            heap = m;
        }

        m[n].key = bson_iter_key(&child);
        m[n].len = bson_iter_key_len(&child);
        m[n].pos = n;
        m[n].it = child;
        n++;
    }

    ngx_http_bytemark_sort_members(m, n);

    rc = ngx_http_bytemark_render_members(b, m, n, depth, item);

    free(heap);

    return rc;
}


static ngx_int_t
ngx_http_bytemark_render_members(ngx_http_bytemark_jbuf_t *b,
    ngx_http_bytemark_member_t *m, ngx_uint_t n, ngx_uint_t depth,
    ngx_http_bytemark_item_t *item)
{
    size_t      mark, value;
    ngx_int_t   rc;
    ngx_uint_t  i, first;

    if (ngx_http_bytemark_jbuf_char(b, '{') != NGX_OK) {
        return NGX_ERROR;
    }

    first = 1;

    for (i = 0; i < n; i++) {
        mark = b->len;

        if (!first && ngx_http_bytemark_jbuf_char(b, ',') != NGX_OK) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_string(b, (u_char *) m[i].key,
                                             m[i].len);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_http_bytemark_jbuf_char(b, ':') != NGX_OK) {
            return NGX_ERROR;
        }

        value = b->len;

        rc = ngx_http_bytemark_render_bson(b, &m[i].it, depth);
        if (rc != NGX_OK) {
            return rc;
        }

        if (i + 1 < n && ngx_http_bytemark_key_cmp(&m[i], &m[i + 1]) == 0) {
            /*
             * a duplicate key: the last one wins, as in a JavaScript
             * client; the earlier value was still checked
             */
            b->len = mark;
            continue;
        }

        first = 0;

        if (item) {
            ngx_http_bytemark_item_note(item, m[i].key, m[i].len,
                                        b->data + value, b->len - value);
        }
    }

    return ngx_http_bytemark_jbuf_char(b, '}');
}


/*
 * A pass's "status" and "pass_uuid", from their rendered value: whatever
 * BSON type became a JSON string (a symbol, a date...) is a string to a
 * filter too.  The escapes the writer uses are undone.
 */

static void
ngx_http_bytemark_item_note(ngx_http_bytemark_item_t *item, const char *key,
    size_t klen, const u_char *v, size_t len)
{
    u_char       c, buf[NGX_HTTP_BYTEMARK_UUID_LEN];
    size_t       n, max;
    ngx_uint_t   status;

    if (klen == 6 && ngx_strncmp(key, "status", 6) == 0) {
        status = 1;
        max = NGX_HTTP_BYTEMARK_STATUS_MAX;

    } else if (klen == 9 && ngx_strncmp(key, "pass_uuid", 9) == 0) {
        status = 0;
        max = NGX_HTTP_BYTEMARK_UUID_LEN;

    } else {
        return;
    }

    if (len < 2 || v[0] != '"') {
        return;
    }

    v++;
    len -= 2;
    n = 0;

    while (len) {
        if (n == max) {
            return;
        }

        c = *v++;
        len--;

        if (c == '\\') {
            c = *v++;
            len--;

            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                /* \u00XX: the writer escapes nothing else this way */
                c = (u_char) (ngx_hextoi((u_char *) v + 2, 2));
                v += 4;
                len -= 4;
                break;
            default:
                /* '"' and '\\' stand for themselves */
                break;
            }
        }

        buf[n++] = c;
    }

    if (status) {
        ngx_memcpy(item->status, buf, n);
        item->status_len = (uint8_t) n;
        item->has_status = 1;

    } else if (n == NGX_HTTP_BYTEMARK_UUID_LEN) {
        ngx_memcpy(item->uuid, buf, n);
        item->has_uuid = 1;
    }
}


static ngx_int_t
ngx_http_bytemark_render_array(ngx_http_bytemark_jbuf_t *b,
    const bson_iter_t *it, ngx_uint_t depth)
{
    ngx_int_t    rc;
    ngx_uint_t   first;
    bson_iter_t  child;

    if (depth > NGX_HTTP_BYTEMARK_MAX_DEPTH || !bson_iter_recurse(it, &child))
    {
        return NGX_DECLINED;
    }

    if (ngx_http_bytemark_jbuf_char(b, '[') != NGX_OK) {
        return NGX_ERROR;
    }

    first = 1;

    while (bson_iter_next(&child)) {
        if (!first && ngx_http_bytemark_jbuf_char(b, ',') != NGX_OK) {
            return NGX_ERROR;
        }

        first = 0;

        rc = ngx_http_bytemark_render_bson(b, &child, depth);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return ngx_http_bytemark_jbuf_char(b, ']');
}


/*
 * Stable: equal keys keep their document order, so the last of them is the
 * one kept.  Pass objects have a handful of keys: insertion sort; a large
 * object (a payload with keys in reverse order, say) must not cost n^2.
 */

static void
ngx_http_bytemark_sort_members(ngx_http_bytemark_member_t *m, ngx_uint_t n)
{
    ngx_uint_t                  i, j;
    ngx_http_bytemark_member_t  t;

    if (n > NGX_HTTP_BYTEMARK_MEMBERS) {
        qsort(m, n, sizeof(ngx_http_bytemark_member_t),
              ngx_http_bytemark_member_cmp);
        return;
    }

    for (i = 1; i < n; i++) {
        if (ngx_http_bytemark_key_cmp(&m[i - 1], &m[i]) <= 0) {
            continue;
        }

        t = m[i];

        for (j = i; j > 0 && ngx_http_bytemark_key_cmp(&m[j - 1], &t) > 0;
             j--)
        {
            m[j] = m[j - 1];
        }

        m[j] = t;
    }
}


/* qsort() is not stable: the position breaks ties */

static int
ngx_http_bytemark_member_cmp(const void *one, const void *two)
{
    ngx_int_t                    rc;
    ngx_http_bytemark_member_t  *a, *b;

    a = (ngx_http_bytemark_member_t *) one;
    b = (ngx_http_bytemark_member_t *) two;

    rc = ngx_http_bytemark_key_cmp(a, b);

    if (rc != 0) {
        return (int) rc;
    }

    return (a->pos > b->pos) - (a->pos < b->pos);
}


/* jansson's order: bytes, then length */

static ngx_int_t
ngx_http_bytemark_key_cmp(ngx_http_bytemark_member_t *a,
    ngx_http_bytemark_member_t *b)
{
    int  rc;

    rc = ngx_memcmp(a->key, b->key, ngx_min(a->len, b->len));

    if (rc != 0) {
        return rc;
    }

    return (a->len > b->len) - (a->len < b->len);
}


/*
 * A pass array of a cache document: each element must be an object; each
 * is rendered and becomes an item of the list.
 */

ngx_int_t
ngx_http_bytemark_render_passes(ngx_http_bytemark_passes_t *list,
    const void *iter)
{
    ngx_int_t                  rc;
    bson_iter_t                child;
    ngx_http_bytemark_item_t  *item;

    if (!bson_iter_recurse(iter, &child)) {
        return NGX_DECLINED;
    }

    while (bson_iter_next(&child)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&child)) {
            return NGX_ABORT;
        }

        item = ngx_http_bytemark_passes_begin(list);
        if (item == NULL) {
            return NGX_ERROR;
        }

        rc = ngx_http_bytemark_render_document(&list->text, &child, 2, item);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_http_bytemark_passes_end(list, item);
    }

    return ngx_http_bytemark_passes_close(list);
}


/* a new item, its separator written: the caller writes the object */

ngx_http_bytemark_item_t *
ngx_http_bytemark_passes_begin(ngx_http_bytemark_passes_t *list)
{
    ngx_uint_t                 n;
    ngx_http_bytemark_item_t  *items;

    if (list->n == list->nalloc) {
        n = list->nalloc ? 2 * list->nalloc : 8;

        items = realloc(list->items, n * sizeof(ngx_http_bytemark_item_t));
        if (items == NULL) {
            return NULL;
        }

        list->items = items;
        list->nalloc = n;
    }

    if (ngx_http_bytemark_jbuf_char(&list->text, list->n ? ',' : '[')
        != NGX_OK)
    {
        return NULL;
    }

    ngx_memzero(&list->items[list->n], sizeof(ngx_http_bytemark_item_t));
    list->items[list->n].start = list->text.len;

    return &list->items[list->n];
}


void
ngx_http_bytemark_passes_end(ngx_http_bytemark_passes_t *list,
    ngx_http_bytemark_item_t *item)
{
    item->len = list->text.len - item->start;
    list->n++;
}


/* after the last item: the closing bracket */

ngx_int_t
ngx_http_bytemark_passes_close(ngx_http_bytemark_passes_t *list)
{
    if (list->n == 0) {
        return NGX_OK;
    }

    return ngx_http_bytemark_jbuf_char(&list->text, ']');
}


/* the array's text, "[...]"; an empty or absent list is "[]" */

void
ngx_http_bytemark_passes_text(ngx_http_bytemark_passes_t *list,
    ngx_str_t *text)
{
    if (list == NULL || list->n == 0) {
        ngx_str_set(text, "[]");
        return;
    }

    text->data = list->text.data;
    text->len = list->text.len;
}


void
ngx_http_bytemark_passes_free(ngx_http_bytemark_passes_t *list)
{
    ngx_http_bytemark_jbuf_free(&list->text);
    free(list->items);
    ngx_memzero(list, sizeof(ngx_http_bytemark_passes_t));
}


/*
 * A payload from MySQL, as JSON text.  Text that is already canonical, as
 * ingest writes it, is copied; other JSON goes through jansson once; text
 * that is not JSON is embedded as a string (SPEC 2).  NGX_DECLINED: text
 * that is neither JSON nor UTF-8, which has no JSON form at all.
 */

ngx_int_t
ngx_http_bytemark_render_payload(ngx_http_bytemark_jbuf_t *b,
    const u_char *text, size_t len)
{
    char          *dump;
    json_t        *v;
    ngx_int_t      rc;
    json_error_t   err;

    if (ngx_http_bytemark_json_canonical(text, len)) {
        return ngx_http_bytemark_jbuf_add(b, text, len);
    }

    v = json_loadb((const char *) text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                   &err);

    if (v == NULL) {
        return ngx_http_bytemark_render_string(b, text, len);
    }

    v = ngx_http_bytemark_json_normalize(v);

    dump = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(v);

    if (dump == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_bytemark_jbuf_add(b, dump, ngx_strlen(dump));

    free(dump);

    return rc;
}


/*
 * Whether text is exactly what the canonical writer would write for it:
 * no blanks, keys in strictly increasing order, integers of at most 18
 * digits, reals as "%.17g" writes them and not integral, only the escapes
 * jansson writes.  Anything else, even valid JSON, answers 0 and is left
 * to jansson; 1 must never be wrong.
 */

ngx_uint_t
ngx_http_bytemark_json_canonical(const u_char *text, size_t len)
{
    const u_char  *p;

    p = ngx_http_bytemark_canon_value(text, text + len, 0);

    return p == text + len;
}


static const u_char *
ngx_http_bytemark_canon_value(const u_char *p, const u_char *end,
    ngx_uint_t depth)
{
    size_t         klen, plen;
    const u_char  *key, *prev;

    if (p == end) {
        return NULL;
    }

    switch (*p) {

    case '{':
        if (++depth > NGX_HTTP_BYTEMARK_MAX_DEPTH) {
            return NULL;
        }

        if (++p < end && *p == '}') {
            return p + 1;
        }

        prev = NULL;
        plen = 0;

        for ( ;; ) {
            key = p + 1;
            p = ngx_http_bytemark_canon_string(p, end, 1);
            if (p == NULL || p == end || *p != ':') {
                return NULL;
            }

            klen = p - 1 - key;

            if (prev) {
                if (ngx_memcmp(prev, key, ngx_min(plen, klen)) > 0
                    || (ngx_memcmp(prev, key, ngx_min(plen, klen)) == 0
                        && plen >= klen))
                {
                    return NULL;
                }
            }

            prev = key;
            plen = klen;

            p = ngx_http_bytemark_canon_value(p + 1, end, depth);
            if (p == NULL || p == end) {
                return NULL;
            }

            if (*p == '}') {
                return p + 1;
            }

            if (*p++ != ',') {
                return NULL;
            }
        }

    case '[':
        if (++depth > NGX_HTTP_BYTEMARK_MAX_DEPTH) {
            return NULL;
        }

        if (++p < end && *p == ']') {
            return p + 1;
        }

        for ( ;; ) {
            p = ngx_http_bytemark_canon_value(p, end, depth);
            if (p == NULL || p == end) {
                return NULL;
            }

            if (*p == ']') {
                return p + 1;
            }

            if (*p++ != ',') {
                return NULL;
            }
        }

    case '"':
        return ngx_http_bytemark_canon_string(p, end, 0);

    case 't':
        return (end - p >= 4 && ngx_strncmp(p, "true", 4) == 0) ? p + 4
                                                                : NULL;

    case 'f':
        return (end - p >= 5 && ngx_strncmp(p, "false", 5) == 0) ? p + 5
                                                                 : NULL;

    case 'n':
        return (end - p >= 4 && ngx_strncmp(p, "null", 4) == 0) ? p + 4
                                                                : NULL;

    default:
        return ngx_http_bytemark_canon_number(p, end);
    }
}


/* a string with only the escapes jansson writes; a key with none at all */

static const u_char *
ngx_http_bytemark_canon_string(const u_char *p, const u_char *end,
    ngx_uint_t key)
{
    u_char  c, v;
    size_t  n;

    if (p == end || *p++ != '"') {
        return NULL;
    }

    while (p < end) {
        p += ngx_http_bytemark_plain_run(p, end - p);

        if (p == end) {
            return NULL;
        }

        c = *p;

        if (c == '"') {
            return p + 1;
        }

        if (c < 0x20) {
            return NULL;
        }

        if (c >= 0x80) {
            n = ngx_http_bytemark_utf8_seq(p, end - p);
            if (n == 0) {
                return NULL;
            }

            p += n;
            continue;
        }

        if (c != '\\') {
            p++;
            continue;
        }

        if (key || end - p < 2) {
            return NULL;
        }

        switch (p[1]) {

        case '"': case '\\': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;

        case 'u':
            /* \u00XX, upper case, for the other control characters */
            if (end - p < 6 || p[2] != '0' || p[3] != '0'
                || (p[4] != '0' && p[4] != '1'))
            {
                return NULL;
            }

            if (p[5] >= '0' && p[5] <= '9') {
                v = p[5] - '0';

            } else if (p[5] >= 'A' && p[5] <= 'F') {
                v = p[5] - 'A' + 10;

            } else {
                return NULL;
            }

            v += (p[4] - '0') * 16;

            if (v == '\b' || v == '\f' || v == '\n' || v == '\r' || v == '\t')
            {
                return NULL;
            }

            p += 6;
            continue;

        default:
            return NULL;
        }
    }

    return NULL;
}


static const u_char *
ngx_http_bytemark_canon_number(const u_char *p, const u_char *end)
{
    char           buf[NGX_HTTP_BYTEMARK_REAL_LEN], *last;
    size_t         n;
    double         d;
    const u_char  *start, *digits;

    start = p;

    if (p < end && *p == '-') {
        p++;
    }

    digits = p;

    if (p == end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p == end || (*p != '.' && *p != 'e' && *p != 'E')) {
        /* an integer: "-0" becomes 0, longer ones may not fit */
        if (p - digits > 18 || (p - digits == 1 && *digits == '0'
                                && digits != start))
        {
            return NULL;
        }

        return p;
    }

    /* a real: the exact text "%.17g" gives for it, and not integral */

    if (*p == '.') {
        p++;

        if (p == end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '-' || *p == '+')) {
            p++;
        }

        if (p == end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    n = p - start;

    if (n >= NGX_HTTP_BYTEMARK_REAL_LEN) {
        return NULL;
    }

    ngx_memcpy(buf, start, n);
    buf[n] = '\0';

    d = strtod(buf, &last);

    if (last != buf + n || d != d || d == 1.0 / 0.0 || d == -1.0 / 0.0
        || (d <= 9007199254740992.0 && d >= -9007199254740992.0
            && d == (double) (int64_t) d))
    {
        return NULL;
    }

    if (ngx_http_bytemark_real_text(d, buf) != n
        || ngx_memcmp(buf, start, n) != 0)
    {
        return NULL;
    }

    return p;
}
