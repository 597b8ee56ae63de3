/*
 * test_crypto.c: crypto.c against published vectors (FIPS 180, RFC 4231,
 * RFC 4648; checked with `openssl dgst`), through its Lua surface and its
 * C API.
 */
#include <string.h>

#include <lualib.h>

#include "t.h"
#include "crypto.h"
#include "rill.h"

static lua_State *L;

/* Evaluates a Lua expression with crypto in scope; returns it as a string
 * ("nil" for nil, "true"/"false" for booleans). */
static const char *eval(const char *expr) {
    static char out[512];
    lua_settop(L, 0);
    lua_pushfstring(L, "local c = crypto; local v = %s; return v == nil and 'nil' or tostring(v)",
                    expr);
    if (luaL_loadstring(L, lua_tostring(L, -1)) || lua_pcall(L, 0, 1, 0)) {
        snprintf(out, sizeof out, "error: %s", lua_tostring(L, -1));
        return out;
    }
    snprintf(out, sizeof out, "%s", lua_tostring(L, -1));
    return out;
}

static void test_digests(void) {
    T_EQ_STR(eval("c.hex(c.digest('sha1', 'abc'))"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    T_EQ_STR(eval("c.hex(c.digest('sha256', 'abc'))"),
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    T_EQ_STR(eval("c.hex(c.digest('sha512', 'abc'))"),
             "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
             "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    T_CHECK(strstr(eval("c.digest('md5', 'abc')"), "unknown algorithm 'md5'") != NULL);
}

static void test_hmacs(void) {
    T_EQ_STR(eval("c.hex(c.hmac('sha256', string.rep('\\11', 20), 'Hi There'))"),
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    T_EQ_STR(eval("c.hex(c.hmac('sha256', 'Jefe', 'what do ya want for nothing?'))"),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    T_EQ_STR(eval("c.hex(c.hmac('sha512', 'Jefe', 'what do ya want for nothing?'))"),
             "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
             "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737");
    /* RFC 4231 case 6: a key longer than the block is hashed first */
    T_EQ_STR(eval("c.hex(c.hmac('sha256', string.rep('\\170', 131), "
                  "'Test Using Larger Than Block-Size Key - Hash Key First'))"),
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    T_EQ_STR(eval("c.hex(c.hmac('sha256', '', ''))"),
             "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    /* the cached context is re-keyed when the key changes */
    T_EQ_STR(eval("c.hmac('sha256', 'a', 'x') == c.hmac('sha256', 'b', 'x')"), "false");
    /* and keeps its key when it does not: the same key, new data, each
     * answer as from a fresh key (RFC 4231 case 2 after two other calls) */
    T_EQ_STR(eval("(function() c.hmac('sha256', 'Jefe', 'one'); c.hmac('sha256', 'Jefe', 'two'); "
                  "return c.hex(c.hmac('sha256', 'Jefe', 'what do ya want for nothing?')) end)()"),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    T_EQ_STR(eval("c.hmac('sha256', 'Jefe', 'one') == c.hmac('sha256', 'Jefe', 'two')"), "false");
    /* a key that is a prefix of the one before is another key */
    T_EQ_STR(
        eval("(function() c.hmac('sha256', 'Jefe', 'x'); local a = c.hmac('sha256', 'Jef', 'x'); "
             "return a == c.hmac('sha256', 'Jefe', 'x') end)()"),
        "false");
}

static void test_c_api(void) {
    unsigned char mac[64];
    size_t len = 0;
    T_EQ_INT(rill_crypto_hmac("sha256", "Jefe", 4, "what do ya want for nothing?", 28, mac, &len),
             0);
    T_EQ_INT(len, 32);
    T_EQ_INT(mac[0], 0x5b);
    T_EQ_INT(rill_crypto_hmac("md5", "k", 1, "d", 1, mac, &len), -1);
}

static void test_base64_vectors(void) {
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char expr[128];
    for (size_t i = 0; i < RILL_ARRAY_LEN(plain); i++) {
        snprintf(expr, sizeof expr, "c.base64('%s')", plain[i]);
        T_EQ_STR(eval(expr), coded[i]);
        snprintf(expr, sizeof expr, "c.unbase64('%s')", coded[i]);
        T_EQ_STR(eval(expr), plain[i]);
    }
    T_EQ_STR(eval("c.unbase64('Zm9vYg')"), "foob"); /* padding is optional */
    T_EQ_STR(eval("c.base64url('\\251\\255\\254')"), "-__-");
    T_EQ_STR(eval("c.base64url('\\255')"), "_w");
    T_EQ_STR(eval("c.unbase64url('_w')"), "\xff");
    T_EQ_STR(eval("c.unbase64('Zm9v!')"), "nil");
    T_EQ_STR(eval("c.unbase64('Zm9vY')"), "nil");   /* a length of 4n+1 */
    T_EQ_STR(eval("c.unbase64('Zg===')"), "nil");   /* too much padding */
    T_EQ_STR(eval("c.unbase64('Zm 9v')"), "nil");   /* no whitespace */
    T_EQ_STR(eval("c.unbase64url('qa3+')"), "nil"); /* '+' is not URL-safe */
}

static void test_hex(void) {
    T_EQ_STR(eval("c.hex('\\0\\1\\254\\255')"), "0001feff");
    T_EQ_STR(eval("c.unhex('0001FEff') == '\\0\\1\\254\\255'"), "true");
    T_EQ_STR(eval("c.unhex('abc')"), "nil");
    T_EQ_STR(eval("c.unhex('zz')"), "nil");
    T_EQ_STR(eval("c.unhex('')"), "");
    /* past 256 bytes out, the other path (a luaL_Buffer) */
    T_EQ_STR(eval("c.unhex(('aB'):rep(300)) == ('\\171'):rep(300)"), "true");
    T_EQ_STR(eval("c.unhex(('ab'):rep(300) .. 'zz')"), "nil");
    T_EQ_STR(eval("c.unhex(('ab'):rep(256)) == ('\\171'):rep(256)"), "true");
}

static void test_equals(void) {
    T_EQ_STR(eval("c.equals('secret', 'secret')"), "true");
    T_EQ_STR(eval("c.equals('secret', 'secreT')"), "false");
    T_EQ_STR(eval("c.equals('secret', 'secret2')"), "false");
    T_EQ_STR(eval("c.equals('', '')"), "true");
}

static void test_random_and_uuids(void) {
    T_EQ_STR(eval("#c.random(32)"), "32");
    T_EQ_STR(eval("c.random(16) ~= c.random(16)"), "true");
    T_EQ_STR(eval("c.random(0)"), "");
    T_CHECK(strstr(eval("c.random(-1)"), "error") != NULL);
    T_EQ_STR(eval("c.uuid4():match('^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$') "
                  "~= nil"),
             "true");
    T_EQ_STR(eval("c.uuid7():match('^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x+$') "
                  "~= nil"),
             "true");
    T_EQ_STR(eval("(function() local prev = c.uuid7() for i = 1, 5000 do local u = c.uuid7() "
                  "if u <= prev then return 'out of order at ' .. i end prev = u end "
                  "return 'sorted' end)()"),
             "sorted");
    /* run ids: the same format and order, from the fast generator */
    T_EQ_STR(eval("(function() local prev, seen = c.id7(), {} for i = 1, 5000 do local u = c.id7() "
                  "if u <= prev or seen[u] or not u:match('^%x+%-%x+%-7%x+%-[89ab]%x+%-%x+$') "
                  "then return 'bad at ' .. i end seen[u] = true prev = u end "
                  "return 'sorted' end)()"),
             "sorted");
    /* the first 12 hex digits are the time in ms */
    T_EQ_STR(eval("math.abs(tonumber(c.uuid7():gsub('-', ''):sub(1, 12), 16) - os.time() * 1000) "
                  "< 5000"),
             "true");
}

int main(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    rill_crypto_open(L);
    lua_setfield(L, LUA_GLOBALSINDEX, "crypto");
    T_RUN(test_digests);
    T_RUN(test_hmacs);
    T_RUN(test_c_api);
    T_RUN(test_base64_vectors);
    T_RUN(test_hex);
    T_RUN(test_equals);
    T_RUN(test_random_and_uuids);
    lua_close(L);
    return T_END();
}
