// R values to and from a Connection with R's own serializer (binary
// format, version 3).
#pragma once

#include <Rinternals.h>

#include <vector>

#include "connection.h"

namespace bgpool {

// Writes `x` as one message, with the descriptors `fds`. The serializer
// streams: large vector data goes from the vector's memory to the socket.
// Returns false when the link failed (the rest of the value was then
// serialized to nowhere). If R jumps out of the serializer, the message is
// aborted (the peer drops it) and the jump goes on.
bool write_message(Connection& conn, SEXP x, const std::vector<int>& fds = {});

// The value in the message `conn` read last (whole, in memory).
SEXP read_value(const Connection& conn);

}  // namespace bgpool
