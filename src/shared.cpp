// The shared-vector ALTREP classes and the R entry points around segments.
//
// A shared vector's data1 is an external pointer to its mapping (unmapped
// by its finalizer when the vector is collected) and data2 its length.
// Only Length and Dataptr are given: R's defaults then serialize, duplicate
// and subset it as ordinary data, so a shared vector saved or sent
// elsewhere carries its values, not a reference.
#include <Rcpp.h>
#include <R_ext/Altrep.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "platform.h"
#include "shared.h"

namespace bgpool {

namespace {

R_altrep_class_t real_class, integer_class, logical_class, raw_class, complex_class;

R_xlen_t shared_length(SEXP x) { return static_cast<R_xlen_t>(REAL(R_altrep_data2(x))[0]); }

void* shared_dataptr(SEXP x, Rboolean) { return R_ExternalPtrAddr(R_altrep_data1(x)); }

const void* shared_dataptr_or_null(SEXP x) { return shared_dataptr(x, FALSE); }

Rboolean shared_inspect(SEXP x, int, int, int, void (*)(SEXP, int, int, int)) {
  Rprintf(" bgpool shared vector (length %.0f)\n", static_cast<double>(shared_length(x)));
  return TRUE;
}

void unmap_finalizer(SEXP ptr) {
  void* addr = R_ExternalPtrAddr(ptr);
  if (addr) os::unmap(addr, static_cast<size_t>(REAL(R_ExternalPtrTag(ptr))[0]));
  R_ClearExternalPtr(ptr);
}

void close_finalizer(SEXP ptr) {
  if (R_ExternalPtrAddr(ptr)) close(static_cast<int>(REAL(R_ExternalPtrTag(ptr))[0]));
  R_ClearExternalPtr(ptr);
}

template <typename Make>
R_altrep_class_t make_class(Make make, const char* name, DllInfo* dll) {
  R_altrep_class_t cls = make(name, "bgpool", dll);
  R_set_altrep_Length_method(cls, shared_length);
  R_set_altrep_Inspect_method(cls, shared_inspect);
  R_set_altvec_Dataptr_method(cls, shared_dataptr);
  R_set_altvec_Dataptr_or_null_method(cls, shared_dataptr_or_null);
  return cls;
}

size_t element_size(SEXPTYPE type) {
  switch (type) {
    case REALSXP: return sizeof(double);
    case INTSXP: return sizeof(int);
    case LGLSXP: return sizeof(int);
    case RAWSXP: return 1;
    case CPLXSXP: return sizeof(Rcomplex);
    default: return 0;
  }
}

R_altrep_class_t class_for(SEXPTYPE type) {
  switch (type) {
    case REALSXP: return real_class;
    case INTSXP: return integer_class;
    case LGLSXP: return logical_class;
    case RAWSXP: return raw_class;
    default: return complex_class;
  }
}

}  // namespace

void register_shared_classes(DllInfo* dll) {
  real_class = make_class(R_make_altreal_class, "bgpool_shared_real", dll);
  integer_class = make_class(R_make_altinteger_class, "bgpool_shared_integer", dll);
  logical_class = make_class(R_make_altlogical_class, "bgpool_shared_logical", dll);
  raw_class = make_class(R_make_altraw_class, "bgpool_shared_raw", dll);
  complex_class = make_class(R_make_altcomplex_class, "bgpool_shared_complex", dll);
}

}  // namespace bgpool

// [[Rcpp::init]]
void bgpool_init_shared(DllInfo* dll) { bgpool::register_shared_classes(dll); }

// How many bytes of data `x` holds, if it can be shared: an ordinary
// (not ALTREP) vector of a type with fixed-size elements; 0 otherwise.
// [[Rcpp::export(rng = false)]]
double shareable_bytes(SEXP x) {
  size_t size = bgpool::element_size(TYPEOF(x));
  if (size == 0 || ALTREP(x)) return 0;
  return static_cast<double>(XLENGTH(x)) * static_cast<double>(size);
}

// A 64-bit hash of x's data, in hex: tells whether an exported vector
// changed since it was last put in a segment.
// [[Rcpp::export(rng = false)]]
std::string vector_hash(SEXP x) {
  const unsigned char* data = static_cast<const unsigned char*>(DATAPTR_RO(x));
  size_t bytes = static_cast<size_t>(shareable_bytes(x));
  uint64_t h = 0x9E3779B97F4A7C15ull ^ bytes;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    h = (h ^ word) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  for (; i < bytes; ++i) h = (h ^ data[i]) * 0x100000001B3ull;
  char out[17];
  snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

// A segment holding a copy of x's data: an external pointer whose
// finalizer closes the segment's fd (the data lives on while mapped).
// [[Rcpp::export(rng = false)]]
SEXP shared_segment(SEXP x) {
  size_t bytes = static_cast<size_t>(shareable_bytes(x));
  int fd = bgpool::os::create_shared_segment(DATAPTR_RO(x), bytes);
  SEXP tag = PROTECT(Rf_ScalarReal(fd));
  SEXP ptr = PROTECT(R_MakeExternalPtr(reinterpret_cast<void*>(1), tag, R_NilValue));
  R_RegisterCFinalizerEx(ptr, bgpool::close_finalizer, TRUE);
  UNPROTECT(2);
  return ptr;
}

// [[Rcpp::export(rng = false)]]
int segment_fd(SEXP segment) {
  if (!R_ExternalPtrAddr(segment)) Rcpp::stop("bgpool: this shared segment was released");
  return static_cast<int>(REAL(R_ExternalPtrTag(segment))[0]);
}

// Closes the master's descriptor of a segment now, not when R collects it:
// the memory goes as soon as no worker maps it either.
// [[Rcpp::export(rng = false)]]
void release_segment(SEXP segment) { bgpool::close_finalizer(segment); }

// Whether `x` is a vector whose data is a shared segment mapped here.
// [[Rcpp::export(rng = false)]]
bool is_shared_vector(SEXP x) {
  if (!ALTREP(x)) return false;
  for (SEXPTYPE type : {REALSXP, INTSXP, LGLSXP, RAWSXP, CPLXSXP})
    if (R_altrep_inherits(x, bgpool::class_for(type))) return true;
  return false;
}

// Worker side: a vector of `type` and `length` whose data is the segment
// `fd` mapped copy-on-write. Takes ownership of fd (closed once mapped).
// [[Rcpp::export(rng = false)]]
SEXP map_shared_vector(int fd, std::string type, double length) {
  SEXPTYPE sexptype = Rf_str2type(type.c_str());
  size_t bytes = static_cast<size_t>(length) * bgpool::element_size(sexptype);
  void* addr = fd >= 0 && bytes > 0 ? bgpool::os::map_private(fd, bytes) : nullptr;
  if (fd >= 0) close(fd);
  if (!addr) Rcpp::stop("bgpool: cannot map a shared vector from the master");
  SEXP size = PROTECT(Rf_ScalarReal(static_cast<double>(bytes)));
  SEXP ptr = PROTECT(R_MakeExternalPtr(addr, size, R_NilValue));
  R_RegisterCFinalizerEx(ptr, bgpool::unmap_finalizer, TRUE);
  SEXP len = PROTECT(Rf_ScalarReal(length));
  SEXP out = R_new_altrep(bgpool::class_for(sexptype), ptr, len);
  UNPROTECT(3);
  return out;
}
