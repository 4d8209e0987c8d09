// Shared vectors: the ALTREP classes, their travel in messages, and the R
// entry points around them. See shared.h.
//
// A shared vector's data1 is an external pointer to its Segment (released
// by the pointer's finalizer when the vector is collected) and data2 its
// length. Besides Length and Dataptr it has only Serialized_state and
// Unserialize: R's defaults duplicate and subset it as ordinary data.
#include <Rcpp.h>
#include <R_ext/Altrep.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "platform.h"
#include "shared.h"

namespace bgpool {

namespace {

R_altrep_class_t real_class, integer_class, logical_class, raw_class, complex_class;

// The ids of exported segments released, until the pool takes them.
std::vector<uint64_t> released_exports;

// A segment: the descriptor of its memory file (-1 once mapped on arrival,
// or released), and where it is mapped here (null until something asks).
// An exported one (made by shared_copy()) may also be kept on other hosts,
// under its id.
struct Segment {
  int fd = -1;
  void* addr = nullptr;
  size_t bytes = 0;
  bool released = false;
  uint64_t id = 0;
  bool exported = false;

  void release() {
    if (addr && bytes) os::unmap(addr, bytes);
    if (fd >= 0) close(fd);
    if (exported && !released) released_exports.push_back(id);
    addr = nullptr;
    fd = -1;
    released = true;
  }
};

uint64_t last_segment_id = 0;
std::vector<int>* writing_fds = nullptr;
SegmentStore* writing_store = nullptr;
Connection* reading_conn = nullptr;
int (*segment_source)(uint64_t id) = nullptr;

Segment* segment_of(SEXP x) { return static_cast<Segment*>(R_ExternalPtrAddr(R_altrep_data1(x))); }

R_xlen_t shared_length(SEXP x) { return static_cast<R_xlen_t>(REAL(R_altrep_data2(x))[0]); }

void* shared_dataptr(SEXP x, Rboolean) {
  Segment* s = segment_of(x);
  if (!s || s->released) Rf_error("bgpool: this shared vector's memory was released");
  if (!s->addr && s->bytes) {
    s->addr = os::map_private(s->fd, s->bytes);
    if (!s->addr) Rf_error("bgpool: cannot map a shared vector's memory");
  }
  return s->addr;
}

const void* shared_dataptr_or_null(SEXP x) {
  Segment* s = segment_of(x);
  return s && !s->released ? s->addr : nullptr;
}

Rboolean shared_inspect(SEXP x, int, int, int, void (*)(SEXP, int, int, int)) {
  Rprintf(" bgpool shared vector (length %.0f)\n", static_cast<double>(shared_length(x)));
  return TRUE;
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

void finalize_segment(SEXP ptr) {
  auto* s = static_cast<Segment*>(R_ExternalPtrAddr(ptr));
  if (!s) return;
  s->release();
  delete s;
  R_ClearExternalPtr(ptr);
}

SEXP new_shared(SEXPTYPE type, R_xlen_t length, Segment* segment) {
  SEXP ptr = PROTECT(R_MakeExternalPtr(segment, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(ptr, finalize_segment, TRUE);
  SEXP len = PROTECT(Rf_ScalarReal(static_cast<double>(length)));
  SEXP out = R_new_altrep(class_for(type), ptr, len);
  UNPROTECT(2);
  return out;
}

bool is_shared(SEXP x) {
  if (!ALTREP(x)) return false;
  for (SEXPTYPE type : {REALSXP, INTSXP, LGLSXP, RAWSXP, CPLXSXP})
    if (R_altrep_inherits(x, class_for(type))) return true;
  return false;
}

// In a message being written: the position of the segment's descriptor
// among the message's (the same segment twice goes once) and the vector's
// length (a segment's size may be rounded up to whole pages); for a peer
// on another host, an export's id there (NA first) and its length.
// Elsewhere NULL: R writes the values.
SEXP shared_serialized_state(SEXP x) {
  Segment* s = segment_of(x);
  if (writing_store && s && s->exported && s->fd >= 0) {
    if (!writing_store->put(s->id, shared_dataptr(x, FALSE), s->bytes)) return nullptr;
    SEXP state = Rf_allocVector(REALSXP, 3);
    REAL(state)[0] = NA_REAL;
    REAL(state)[1] = static_cast<double>(s->id);
    REAL(state)[2] = static_cast<double>(shared_length(x));
    return state;
  }
  if (!writing_fds || !s || s->fd < 0) return nullptr;
  auto at = std::find(writing_fds->begin(), writing_fds->end(), s->fd);
  if (at == writing_fds->end()) at = writing_fds->insert(writing_fds->end(), s->fd);
  SEXP state = Rf_allocVector(REALSXP, 2);
  REAL(state)[0] = static_cast<double>(at - writing_fds->begin());
  REAL(state)[1] = static_cast<double>(shared_length(x));
  return state;
}

// Maps the descriptor `state` names, in the message being read (or, for
// an export kept on this host, that its template gives), as a vector of
// `type`.
template <SEXPTYPE type>
SEXP shared_unserialize(SEXP, SEXP state) {
  bool stored = TYPEOF(state) == REALSXP && XLENGTH(state) == 3 && ISNA(REAL(state)[0]);
  if (!reading_conn || TYPEOF(state) != REALSXP || (XLENGTH(state) != 2 && !stored))
    Rf_error("bgpool: a shared vector arrived outside a message of the pool");
  int fd = stored ? (segment_source ? segment_source(static_cast<uint64_t>(REAL(state)[1])) : -1)
                  : reading_conn->take_descriptor(static_cast<size_t>(REAL(state)[0]));
  if (fd < 0) Rf_error("bgpool: a shared vector arrived without its memory");
  R_xlen_t length = static_cast<R_xlen_t>(REAL(state)[stored ? 2 : 1]);
  size_t bytes = static_cast<size_t>(length) * element_size(type);
  struct stat info;
  if (fstat(fd, &info) != 0 || static_cast<size_t>(info.st_size) < bytes) {
    close(fd);
    Rf_error("bgpool: a shared vector arrived with less memory than its length needs");
  }
  void* addr = bytes ? os::map_private(fd, bytes) : nullptr;
  close(fd);
  if (bytes && !addr) Rf_error("bgpool: cannot map a shared vector's memory");
  auto* segment = new Segment;
  segment->addr = addr;
  segment->bytes = bytes;
  return new_shared(type, length, segment);
}

template <SEXPTYPE type, typename Make>
R_altrep_class_t make_class(Make make, const char* name, DllInfo* dll) {
  R_altrep_class_t cls = make(name, "bgpool", dll);
  R_set_altrep_Length_method(cls, shared_length);
  R_set_altrep_Inspect_method(cls, shared_inspect);
  R_set_altrep_Serialized_state_method(cls, shared_serialized_state);
  R_set_altrep_Unserialize_method(cls, shared_unserialize<type>);
  R_set_altvec_Dataptr_method(cls, shared_dataptr);
  R_set_altvec_Dataptr_or_null_method(cls, shared_dataptr_or_null);
  return cls;
}

// The bytes of data `x` holds if it can be shared (an ordinary vector of a
// type with fixed-size elements, or a shared one), else 0.
size_t shareable(SEXP x) {
  size_t size = element_size(TYPEOF(x));
  if (size == 0 || (ALTREP(x) && !is_shared(x))) return 0;
  return static_cast<size_t>(XLENGTH(x)) * size;
}

constexpr int kShareDepth = 8;

// A shared vector that still has its descriptor travels as it is.
bool travels_shared(SEXP x) {
  Segment* s = is_shared(x) ? segment_of(x) : nullptr;
  return s && s->fd >= 0;
}

SEXP share_within(SEXP x, double threshold, std::vector<SEXP>* made, int depth) {
  size_t bytes = shareable(x);
  if (bytes > 0 && static_cast<double>(bytes) >= threshold && !travels_shared(x)) {
    SEXP copy = share_vector(x);
    made->push_back(copy);
    return copy;
  }
  if (TYPEOF(x) != VECSXP || depth >= kShareDepth) return x;
  SEXP out = x;
  PROTECT_INDEX index;
  PROTECT_WITH_INDEX(out, &index);
  for (R_xlen_t i = 0; i < XLENGTH(x); ++i) {
    SEXP element = VECTOR_ELT(x, i);
    SEXP shared = share_within(element, threshold, made, depth + 1);
    if (shared == element) continue;
    if (out == x) REPROTECT(out = Rf_shallow_duplicate(x), index);
    SET_VECTOR_ELT(out, i, shared);
  }
  UNPROTECT(1);
  return out;
}

}  // namespace

void register_shared_classes(DllInfo* dll) {
  real_class = make_class<REALSXP>(R_make_altreal_class, "bgpool_shared_real", dll);
  integer_class = make_class<INTSXP>(R_make_altinteger_class, "bgpool_shared_integer", dll);
  logical_class = make_class<LGLSXP>(R_make_altlogical_class, "bgpool_shared_logical", dll);
  raw_class = make_class<RAWSXP>(R_make_altraw_class, "bgpool_shared_raw", dll);
  complex_class = make_class<CPLXSXP>(R_make_altcomplex_class, "bgpool_shared_complex", dll);
}

SEXP share_vector(SEXP x) {
  size_t bytes = shareable(x);
  const void* data = bytes ? DATAPTR_RO(x) : nullptr;
  auto* segment = new Segment;
  try {
    segment->fd = os::create_shared_segment("bgpool", data, bytes);
  } catch (...) {
    delete segment;
    throw;
  }
  segment->bytes = bytes;
  segment->id = ++last_segment_id;
  SEXP out = PROTECT(new_shared(TYPEOF(x), XLENGTH(x), segment));
  SHALLOW_DUPLICATE_ATTRIB(out, x);
  UNPROTECT(1);
  return out;
}

SEXP share_large(SEXP x, double threshold, std::vector<SEXP>* made) {
  if (!(threshold < R_PosInf)) return x;
  return share_within(x, std::max(threshold, 1.0), made, 0);
}

void release_shared(SEXP x) {
  if (Segment* s = segment_of(x)) s->release();
}

SharedWriting::SharedWriting(std::vector<int>* fds) : previous_(writing_fds) { writing_fds = fds; }
SharedWriting::~SharedWriting() { writing_fds = previous_; }

StoreWriting::StoreWriting(SegmentStore* store) : previous_(writing_store) { writing_store = store; }
StoreWriting::~StoreWriting() { writing_store = previous_; }

void set_segment_source(int (*fetch)(uint64_t id)) { segment_source = fetch; }

std::vector<uint64_t> take_released_exports() {
  std::vector<uint64_t> out;
  out.swap(released_exports);
  return out;
}

SharedReading::SharedReading(Connection* conn) : previous_(reading_conn) { reading_conn = conn; }
SharedReading::~SharedReading() { reading_conn = previous_; }

}  // namespace bgpool

// [[Rcpp::init]]
void bgpool_init_shared(DllInfo* dll) { bgpool::register_shared_classes(dll); }

// How many bytes of data `x` holds, if it can be shared; 0 otherwise.
// [[Rcpp::export(rng = false)]]
double shareable_bytes(SEXP x) { return static_cast<double>(bgpool::shareable(x)); }

// A 64-bit hash of x's data, in hex: tells whether an exported vector
// changed since it was last put in a segment.
// [[Rcpp::export(rng = false)]]
std::string vector_hash(SEXP x) {
  size_t bytes = bgpool::shareable(x);
  const unsigned char* data = static_cast<const unsigned char*>(bytes ? DATAPTR_RO(x) : nullptr);
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

// A shared copy of `x` (a vector with data to share).
// [[Rcpp::export(rng = false)]]
SEXP shared_copy(SEXP x) {
  if (bgpool::shareable(x) == 0) Rcpp::stop("bgpool: this value has no data to share");
  SEXP copy = bgpool::share_vector(x);
  bgpool::segment_of(copy)->exported = true;  // (an export: other hosts may keep it)
  return copy;
}

// The descriptor of a shared vector's segment: what tells one from another
// (NA once it has none).
// [[Rcpp::export(rng = false)]]
int shared_id(SEXP x) {
  bgpool::Segment* s = x != R_NilValue && bgpool::is_shared(x) ? bgpool::segment_of(x) : nullptr;
  return s && s->fd >= 0 ? s->fd : NA_INTEGER;
}

// Lets a shared copy's segment go now, not when R collects it.
// [[Rcpp::export(rng = false)]]
void release_segment(SEXP x) {
  if (bgpool::is_shared(x)) bgpool::release_shared(x);
}

// Whether `x` is a shared vector (a routine R/worker.R calls; see entry.h).
extern "C" SEXP C_is_shared_vector(SEXP x) { return Rf_ScalarLogical(bgpool::is_shared(x)); }
