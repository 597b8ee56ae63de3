/*
 * crypto.h: the C side of rill's crypto module, for other modules (signing
 * outbound requests, run ids). Lua sees it as rill.c.crypto (crypto.c).
 */
#ifndef RILL_CRYPTO_H
#define RILL_CRYPTO_H

#include <stddef.h>

/* HMAC of data with key; alg is "sha1", "sha256", "sha384" or "sha512".
 * out must hold 64 bytes; *outlen receives the MAC's length. 0 or -1. */
int rill_crypto_hmac(const char *alg, const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char *out, size_t *outlen);

/* n secure random bytes into buf. 0 or -1. */
int rill_crypto_random(void *buf, size_t n);

/* A version 7 UUID (RFC 9562), NUL-terminated; successive calls sort
 * strictly increasing as strings. */
void rill_crypto_uuid7(char out[37]);

/* The same, with random bits from a fast generator seeded securely once:
 * unique and ordered, but guessable. For run ids, never for secrets. */
void rill_crypto_id7(char out[37]);

#endif
