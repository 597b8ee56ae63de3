-- crypto: hashes, HMACs, encodings, constant-time comparison and secure
-- randomness for flows, over rill.c.crypto (OpenSSL). Hashes and MACs return
-- raw bytes: wrap them in crypto.hex() or crypto.base64() to compare with a
-- header. Decoders (unhex, unbase64, unbase64url) return nil on bad input.
local c = require "rill.c.crypto"
local bounded = require "rill.bounded"

local crypto = {
  digest = c.digest, hmac = c.hmac,
  -- the encoders build a result larger than their input, the decoders read
  -- all of theirs, each in one C call: refused over max_string (rill.bounded)
  hex = bounded.encoder("crypto.hex", c.hex, 2), unhex = bounded.decoder("crypto.unhex", c.unhex),
  base64 = bounded.encoder("crypto.base64", c.base64, 4 / 3),
  unbase64 = bounded.decoder("crypto.unbase64", c.unbase64),
  base64url = bounded.encoder("crypto.base64url", c.base64url, 4 / 3),
  unbase64url = bounded.decoder("crypto.unbase64url", c.unbase64url),
  equals = c.equals, random = c.random,
  uuid = c.uuid4, uuid4 = c.uuid4, uuid7 = c.uuid7,
}

for _, alg in ipairs { "sha1", "sha256", "sha512" } do
  crypto[alg] = function(data) return c.digest(alg, data) end
  crypto["hmac_" .. alg] = function(key, data) return c.hmac(alg, key, data) end
end

return crypto
