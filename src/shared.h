// Large vectors through shared memory segments, both ways.
//
// A shared vector is an ALTREP vector whose data is a segment: a memory
// file (memfd) holding a copy of a vector's data. It travels in a message
// as a reference: while a message is written, its Serialized_state method
// adds the segment's descriptor to the message (passed with it over the
// socket) and writes the descriptor's position; while one is read, its
// Unserialize method maps that descriptor copy-on-write. So a large vector
// costs the receiver no copy and no freshly touched memory, and N workers
// that receive one export map one copy. Outside bgpool's messages
// (saveRDS(), serialize()) a shared vector writes its values.
#pragma once

#include <Rinternals.h>
#include <R_ext/Rdynload.h>

#include <cstdint>
#include <vector>

#include "connection.h"

namespace bgpool {

void register_shared_classes(DllInfo* dll);

// A shared vector holding a copy of `x`'s data (and its attributes); x is
// an ordinary vector of a type with fixed-size elements.
SEXP share_vector(SEXP x);

// `x` with every vector of at least `threshold` bytes within it (in lists,
// to a small depth) replaced by a shared copy; `x` itself when there is
// none. The copies made are added to `made`, for release_shared().
SEXP share_large(SEXP x, double threshold, std::vector<SEXP>* made);

// Lets a shared vector's segment go now (its descriptor and any mapping
// here), not when R collects it; the vector must not be used after.
void release_shared(SEXP x);

// While it lives, shared vectors serialized go into `fds` as references.
class SharedWriting {
 public:
  explicit SharedWriting(std::vector<int>* fds);
  ~SharedWriting();

 private:
  std::vector<int>* previous_;
};

// Where exported shared vectors go for a peer on another host (its link
// takes no descriptors): a copy kept there by the host's template, from
// which the host's workers map it, so an export crosses the network once
// per host (pool.h).
class SegmentStore {
 public:
  virtual ~SegmentStore() = default;
  // Puts a segment's data on the host, unless it is there already; false
  // when it cannot (the vector then writes its values).
  virtual bool put(uint64_t id, const void* data, size_t bytes) = 0;
};

// While it lives, exported shared vectors written go as references to
// their copy in `store`.
class StoreWriting {
 public:
  explicit StoreWriting(SegmentStore* store);
  ~StoreWriting();

 private:
  SegmentStore* previous_;
};

// On another host: how a worker gets the descriptor of a stored segment
// (-1 if it cannot).
void set_segment_source(int (*fetch)(uint64_t id));

// The ids of exported segments released since the last call, whose
// copies the hosts may drop.
std::vector<uint64_t> take_released_exports();

// While it lives, references read are taken from `conn`'s message.
class SharedReading {
 public:
  explicit SharedReading(Connection* conn);
  ~SharedReading();

 private:
  Connection* previous_;
};

}  // namespace bgpool
