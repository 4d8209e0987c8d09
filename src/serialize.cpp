// Serialization between R values and a Connection.
#include <Rcpp.h>

#include "serialize.h"
#include "shared.h"

namespace bgpool {

namespace {

void out_bytes(R_outpstream_t stream, void* data, int n) {
  // A failed put() marks the connection broken; later puts do nothing.
  static_cast<Connection*>(stream->data)->put(data, static_cast<size_t>(n));
}

void out_char(R_outpstream_t stream, int c) {
  char byte = static_cast<char>(c);
  out_bytes(stream, &byte, 1);
}

// Reading from the message in memory.
struct Reader {
  const char* data;
  size_t size, at;
};

void in_bytes(R_inpstream_t stream, void* data, int n) {
  auto* reader = static_cast<Reader*>(stream->data);
  size_t want = static_cast<size_t>(n);
  if (reader->size - reader->at < want)
    Rf_error("bgpool: a message from the other side of the pool's link was shorter than its content");
  std::memcpy(data, reader->data + reader->at, want);
  reader->at += want;
}

int in_char(R_inpstream_t stream) {
  unsigned char byte = 0;
  in_bytes(stream, &byte, 1);
  return byte;
}

// Aborts the message if R jumps out before it is complete.
class WriteGuard {
 public:
  explicit WriteGuard(Connection& conn) : conn_(conn) {}
  ~WriteGuard() {
    if (!done_) conn_.abort_write();
  }
  void done() { done_ = true; }

 private:
  Connection& conn_;
  bool done_ = false;
};

}  // namespace

bool write_message(Connection& conn, SEXP x) {
  if (!conn.begin_write()) return false;
  WriteGuard guard(conn);
  std::vector<int> fds;  // of the shared vectors within x (else they write their values)
  SharedWriting sharing(conn.passes_fds() ? &fds : nullptr);
  StoreWriting storing(conn.segment_store());
  R_outpstream_st stream;
  R_InitOutPStream(&stream, &conn, R_pstream_binary_format, 3, out_char, out_bytes, nullptr,
                   R_NilValue);
  Rcpp::unwindProtect([&] {
    R_Serialize(x, &stream);
    return R_NilValue;
  });
  guard.done();
  return conn.end_write(fds);
}

SEXP read_value(Connection& conn) {
  Reader reader{conn.message().data(), conn.message().size(), 0};
  SharedReading sharing(&conn);
  R_inpstream_st stream;
  R_InitInPStream(&stream, &reader, R_pstream_binary_format, in_char, in_bytes, nullptr,
                  R_NilValue);
  return Rcpp::unwindProtect([&] { return R_Unserialize(&stream); });
}

SharedCopies::~SharedCopies() {
  for (SEXP x : made_) {
    release_shared(x);
    R_ReleaseObject(x);
  }
}

SEXP SharedCopies::share(SEXP x, double threshold) {
  std::vector<SEXP> made;
  SEXP out = share_large(x, threshold, &made);
  for (SEXP copy : made) {
    R_PreserveObject(copy);
    made_.push_back(copy);
  }
  return out;
}

}  // namespace bgpool
