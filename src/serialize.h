// R values to and from a Connection with R's own serializer (binary
// format, version 3): vector data moves between the socket and the
// vector's memory with no staging copy of the whole payload.
#pragma once

#include <Rinternals.h>

#include "connection.h"

namespace bgpool {

// Writes `x` as one message. Returns false when the connection failed (the
// peer went away, or the user interrupted the wait): the rest of the value
// is then serialized to nowhere, so R never jumps out for a failed write.
// If R jumps out of the serializer for its own reasons, the connection is
// marked broken first: a half-written message can never be completed.
bool write_message(Connection& conn, SEXP x);

// Reads one message; conn.begin_message() must have succeeded. A failure
// mid-message raises an R condition of class bgpool_transport_error (or
// the user's interrupt) and leaves the connection broken.
SEXP read_message(Connection& conn);

}  // namespace bgpool
