/*
 * crypto.c: hashes, HMACs, hex and base64, constant-time comparison, secure
 * random bytes and UUIDs, over OpenSSL 3. The digests and one HMAC context
 * per algorithm are fetched once and reused: the HMAC is on the hot path of
 * every signed webhook.
 */
#include "crypto.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "rill.h"

typedef struct algorithm {
    const char *name;    /* as rill spells it */
    const char *openssl; /* as OpenSSL fetches it */
    EVP_MD *md;          /* fetched on first use */
    EVP_MAC_CTX *hmac;   /* keyed with key, when key is not NULL */
    unsigned char *key;  /* a copy of the key hmac holds, so that a call with the same key
                            (a webhook's secret, every request) skips the keying */
    size_t keylen;
} algorithm;

static algorithm algorithms[] = {
    {"sha1", "SHA1", NULL, NULL, NULL, 0},
    {"sha256", "SHA256", NULL, NULL, NULL, 0},
    {"sha384", "SHA384", NULL, NULL, NULL, 0},
    {"sha512", "SHA512", NULL, NULL, NULL, 0},
};
static EVP_MAC *hmac_mac;

static void forget_key(algorithm *a) {
    OPENSSL_clear_free(a->key, a->keylen);
    a->key = NULL;
    a->keylen = 0;
}

static void crypto_cleanup(void) {
    for (size_t i = 0; i < RILL_ARRAY_LEN(algorithms); i++) {
        forget_key(&algorithms[i]);
        EVP_MAC_CTX_free(algorithms[i].hmac);
        EVP_MD_free(algorithms[i].md);
        algorithms[i].hmac = NULL;
        algorithms[i].md = NULL;
    }
    EVP_MAC_free(hmac_mac);
    hmac_mac = NULL;
}

/* The algorithm named alg with its digest fetched, or NULL. */
static algorithm *find_algorithm(const char *alg) {
    for (size_t i = 0; i < RILL_ARRAY_LEN(algorithms); i++) {
        algorithm *a = &algorithms[i];
        if (strcmp(a->name, alg) != 0)
            continue;
        if (a->md == NULL) {
            static int registered;
            if (!registered) {
                atexit(crypto_cleanup);
                registered = 1;
            }
            a->md = EVP_MD_fetch(NULL, a->openssl, NULL);
        }
        return a->md ? a : NULL;
    }
    return NULL;
}

static EVP_MAC_CTX *hmac_context(algorithm *a) {
    if (a->hmac)
        return a->hmac;
    if (hmac_mac == NULL && (hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
        return NULL;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_mac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)a->openssl, 0),
        OSSL_PARAM_construct_end()};
    if (ctx == NULL || !EVP_MAC_CTX_set_params(ctx, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return a->hmac = ctx;
}

int rill_crypto_hmac(const char *alg, const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char *out, size_t *outlen) {
    static const unsigned char empty_key[1];
    algorithm *a = find_algorithm(alg);
    EVP_MAC_CTX *ctx = a ? hmac_context(a) : NULL;
    if (ctx == NULL)
        return -1;
    int same_key = a->key != NULL && a->keylen == keylen && CRYPTO_memcmp(a->key, key, keylen) == 0;
    if (same_key) {
        /* a NULL key: the one set before, its padded blocks already hashed */
        if (!EVP_MAC_init(ctx, NULL, 0, NULL))
            goto failed;
    } else {
        forget_key(a);
        /* OpenSSL refuses a NULL key even with length 0; an empty key is valid HMAC. */
        if (!EVP_MAC_init(ctx, keylen ? key : empty_key, keylen, NULL))
            goto failed;
        if ((a->key = OPENSSL_malloc(keylen ? keylen : 1)) != NULL) {
            memcpy(a->key, keylen ? key : empty_key, keylen);
            a->keylen = keylen;
        }
    }
    if (!EVP_MAC_update(ctx, data, len) || !EVP_MAC_final(ctx, out, outlen, EVP_MAX_MD_SIZE))
        goto failed;
    return 0;
failed:
    forget_key(a);
    return -1;
}

int rill_crypto_random(void *buf, size_t n) {
    return n == 0 || RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

/* ---- UUIDs ---- */

static void uuid_format(const unsigned char b[16], char out[37]) {
    static const char hex[] = "0123456789abcdef";
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[b[i] >> 4];
        out[j++] = hex[b[i] & 15];
    }
    out[36] = '\0';
}

/* xoshiro256**: fast, and good enough for ids that must be unique but not
 * secret. Seeded from the secure generator on first use. */
static uint64_t fast_state[4];

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t fast_random(void) {
    if ((fast_state[0] | fast_state[1] | fast_state[2] | fast_state[3]) == 0 &&
        rill_crypto_random(fast_state, sizeof fast_state) != 0)
        fast_state[0] = (uint64_t)time(NULL) | 1;
    uint64_t *s = fast_state, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void uuid7(char out[37], int secure) {
    /* RFC 9562 method 1: the 12-bit rand_a field counts within a
     * millisecond, from a random start, so ids made in one ms still sort. */
    static uint64_t last_ms;
    static unsigned counter;
    unsigned char b[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (secure) {
        rill_crypto_random(b + 6, 10);
    } else {
        uint64_t r1 = fast_random(), r2 = fast_random();
        memcpy(b + 6, &r1, 8);
        memcpy(b + 14, &r2, 2);
    }
    if (ms <= last_ms) {
        ms = last_ms;
        if (++counter > 0xfff) { /* the counter overflowed: borrow the next ms */
            ms++;
            counter = (unsigned)(b[6] & 0x07) << 8 | b[7];
        }
    } else {
        counter = (unsigned)(b[6] & 0x07) << 8 | b[7]; /* leaves room to count up */
    }
    last_ms = ms;
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (counter >> 8));
    b[7] = (unsigned char)(counter & 0xff);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    uuid_format(b, out);
}

void rill_crypto_uuid7(char out[37]) {
    uuid7(out, 1);
}

void rill_crypto_id7(char out[37]) {
    uuid7(out, 0);
}

/* ---- Encodings ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void push_base64(lua_State *L, const unsigned char *s, size_t n, const char *alphabet,
                        int pad) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        luaL_addchar(&b, alphabet[v >> 18]);
        luaL_addchar(&b, alphabet[(v >> 12) & 63]);
        luaL_addchar(&b, alphabet[(v >> 6) & 63]);
        luaL_addchar(&b, alphabet[v & 63]);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        luaL_addchar(&b, alphabet[v >> 18]);
        luaL_addchar(&b, alphabet[(v >> 12) & 63]);
        if (pad)
            luaL_addlstring(&b, "==", 2);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        luaL_addchar(&b, alphabet[v >> 18]);
        luaL_addchar(&b, alphabet[(v >> 12) & 63]);
        luaL_addchar(&b, alphabet[(v >> 6) & 63]);
        if (pad)
            luaL_addchar(&b, '=');
    }
    luaL_pushresult(&b);
}

/* Arithmetic, not a search of the alphabet: a decode is one C call the
 * watchdog cannot pause, and strchr made it ~14 ms per MiB. */
static int b64_value(unsigned char c, const char *alphabet) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)alphabet[62])
        return 62;
    if (c == (unsigned char)alphabet[63])
        return 63;
    return -1;
}

/* Decodes base64 in `alphabet`, padding optional; pushes nil when malformed. */
static int push_unbase64(lua_State *L, const char *s, size_t n, const char *alphabet) {
    while (n > 0 && s[n - 1] == '=')
        n--;
    size_t padded = lua_objlen(L, 1);
    if (n % 4 == 1 || (padded != n && (padded % 4 != 0 || padded - n > 2))) {
        lua_pushnil(L);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i], alphabet);
        if (v < 0) {
            luaL_pushresult(&b);
            lua_pop(L, 1);
            lua_pushnil(L);
            return 1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)((acc >> bits) & 0xff));
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- Lua API ---- */

static algorithm *check_algorithm(lua_State *L, int idx) {
    const char *name = luaL_checkstring(L, idx);
    algorithm *a = find_algorithm(name);
    if (a == NULL)
        luaL_argerror(
            L, idx,
            lua_pushfstring(L, "unknown algorithm '%s' (sha1, sha256, sha384, sha512)", name));
    return a;
}

/* digest(alg, data) -> raw digest */
static int l_digest(lua_State *L) {
    algorithm *a = check_algorithm(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int outlen;
    if (!EVP_Digest(data, n, out, &outlen, a->md, NULL))
        return luaL_error(L, "crypto.digest: %s failed", a->name);
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

/* hmac(alg, key, data) -> raw MAC */
static int l_hmac(lua_State *L) {
    algorithm *a = check_algorithm(L, 1);
    size_t keylen, n;
    const char *key = luaL_checklstring(L, 2, &keylen);
    const char *data = luaL_checklstring(L, 3, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    size_t outlen;
    if (rill_crypto_hmac(a->name, key, keylen, data, n, out, &outlen) != 0)
        return luaL_error(L, "crypto.hmac: HMAC-%s failed", a->name);
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

static int l_hex(lua_State *L) {
    static const char hex[] = "0123456789abcdef";
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        luaL_addchar(&b, hex[s[i] >> 4]);
        luaL_addchar(&b, hex[s[i] & 15]);
    }
    luaL_pushresult(&b);
    return 1;
}

/* unhex(s) -> bytes, or nil when s is not hex. A signature's hex (the
 * common case, once per signed request) is decoded on the C stack and
 * pushed once; a longer input goes through a luaL_Buffer. */
static int l_unhex(lua_State *L) {
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    if (n % 2) {
        lua_pushnil(L);
        return 1;
    }
    char small[256];
    luaL_Buffer b;
    int buffered = n / 2 > sizeof small;
    if (buffered)
        luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i += 2) {
        int hi = rill_hex_digit(s[i]), lo = rill_hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0) {
            if (buffered) {
                luaL_pushresult(&b);
                lua_pop(L, 1);
            }
            lua_pushnil(L);
            return 1;
        }
        if (buffered)
            luaL_addchar(&b, (char)(hi << 4 | lo));
        else
            small[i / 2] = (char)(hi << 4 | lo);
    }
    if (buffered)
        luaL_pushresult(&b);
    else
        lua_pushlstring(L, small, n / 2);
    return 1;
}

static int l_base64(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    push_base64(L, (const unsigned char *)s, n, B64, 1);
    return 1;
}

static int l_base64url(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    push_base64(L, (const unsigned char *)s, n, B64URL, 0);
    return 1;
}

static int l_unbase64(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    return push_unbase64(L, s, n, B64);
}

static int l_unbase64url(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    return push_unbase64(L, s, n, B64URL);
}

/* equals(a, b): constant time in the contents; different lengths are unequal. */
static int l_equals(lua_State *L) {
    size_t na, nb;
    const char *a = luaL_checklstring(L, 1, &na);
    const char *b = luaL_checklstring(L, 2, &nb);
    lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
    return 1;
}

static int l_random(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 1024 * 1024, 1, "must be from 0 to 1048576");
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    unsigned char *buf = malloc((size_t)n);
    if (buf == NULL || rill_crypto_random(buf, (size_t)n) != 0) {
        free(buf);
        return luaL_error(L, "crypto.random: no secure random bytes available");
    }
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    free(buf);
    return 1;
}

static int l_uuid4(lua_State *L) {
    unsigned char b[16];
    char out[37];
    if (rill_crypto_random(b, sizeof b) != 0)
        return luaL_error(L, "crypto.uuid4: no secure random bytes available");
    b[6] = (unsigned char)(0x40 | (b[6] & 0x0f));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    uuid_format(b, out);
    lua_pushlstring(L, out, 36);
    return 1;
}

static int l_uuid7(lua_State *L) {
    char out[37];
    rill_crypto_uuid7(out);
    lua_pushlstring(L, out, 36);
    return 1;
}

/* id7() -> a UUIDv7 whose random bits are fast, not secret: run ids. */
static int l_id7(lua_State *L) {
    char out[37];
    rill_crypto_id7(out);
    lua_pushlstring(L, out, 36);
    return 1;
}

int rill_crypto_open(lua_State *L) {
    static const luaL_Reg funcs[] = {{"digest", l_digest},
                                     {"hmac", l_hmac},
                                     {"hex", l_hex},
                                     {"unhex", l_unhex},
                                     {"base64", l_base64},
                                     {"unbase64", l_unbase64},
                                     {"base64url", l_base64url},
                                     {"unbase64url", l_unbase64url},
                                     {"equals", l_equals},
                                     {"random", l_random},
                                     {"uuid4", l_uuid4},
                                     {"uuid7", l_uuid7},
                                     {"id7", l_id7},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
