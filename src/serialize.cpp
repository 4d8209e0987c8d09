// Streaming serialization between R values and a Connection.
#include <Rcpp.h>

#include "serialize.h"

extern "C" void Rf_onintr(void);

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

[[noreturn]] void raise_failure(const Connection& conn);

void in_bytes(R_inpstream_t stream, void* data, int n) {
  auto* conn = static_cast<Connection*>(stream->data);
  if (!conn->get(data, static_cast<size_t>(n))) raise_failure(*conn);
}

int in_char(R_inpstream_t stream) {
  unsigned char byte = 0;
  in_bytes(stream, &byte, 1);
  return byte;
}

// Marks the connection broken unless the message was completed.
class MessageGuard {
 public:
  explicit MessageGuard(Connection& conn) : conn_(conn) {}
  ~MessageGuard() {
    if (!done_) conn_.mark_broken("a message was cut short");
  }
  void done() { done_ = true; }

 private:
  Connection& conn_;
  bool done_ = false;
};

// Called from the unserializer's callbacks only, where R may jump: no C++
// object with a destructor is alive between here and R_UnwindProtect.
[[noreturn]] void raise_failure(const Connection& conn) {
  if (conn.interrupted()) Rf_onintr();
  SEXP cond = PROTECT(Rf_allocVector(VECSXP, 2));
  SEXP names = PROTECT(Rf_allocVector(STRSXP, 2));
  SET_STRING_ELT(names, 0, Rf_mkChar("message"));
  SET_STRING_ELT(names, 1, Rf_mkChar("call"));
  Rf_setAttrib(cond, R_NamesSymbol, names);
  char message[512];
  snprintf(message, sizeof message, "bgpool: connection to a worker failed: %s",
           conn.failure().c_str());
  SET_VECTOR_ELT(cond, 0, Rf_mkString(message));
  SEXP cls = PROTECT(Rf_allocVector(STRSXP, 4));
  const char* classes[] = {"bgpool_transport_error", "bgpool_error", "error",
                           "condition"};
  for (int i = 0; i < 4; ++i) SET_STRING_ELT(cls, i, Rf_mkChar(classes[i]));
  Rf_setAttrib(cond, R_ClassSymbol, cls);
  SEXP call = PROTECT(Rf_lang2(Rf_install("stop"), cond));
  Rf_eval(call, R_BaseEnv);
  Rf_error("%s", message);  // not reached: stop() does not return
}

}  // namespace

bool write_message(Connection& conn, SEXP x) {
  if (conn.broken()) return false;
  MessageGuard guard(conn);
  R_outpstream_st stream;
  R_InitOutPStream(&stream, &conn, R_pstream_binary_format, 3, out_char,
                   out_bytes, nullptr, R_NilValue);
  Rcpp::unwindProtect([&] {
    R_Serialize(x, &stream);
    return R_NilValue;
  });
  guard.done();
  return conn.end_message();
}

SEXP read_message(Connection& conn) {
  MessageGuard guard(conn);
  R_inpstream_st stream;
  R_InitInPStream(&stream, &conn, R_pstream_binary_format, in_char, in_bytes,
                  nullptr, R_NilValue);
  SEXP x = Rcpp::unwindProtect([&] {
    SEXP value = PROTECT(R_Unserialize(&stream));
    if (!conn.end_read()) raise_failure(conn);
    UNPROTECT(1);
    return value;
  });
  guard.done();
  return x;
}

}  // namespace bgpool
