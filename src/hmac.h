// HMAC-SHA-256 (RFC 2104, FIPS 180-4), for the challenge that a worker
// connecting over TCP answers with the pool's token: the token itself
// never crosses the network.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace bgpool {

using Digest = std::array<uint8_t, 32>;

Digest sha256(const uint8_t* data, size_t size);
Digest hmac_sha256(const std::string& key, const uint8_t* message, size_t size);

}  // namespace bgpool
