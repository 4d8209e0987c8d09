// Running tasks as parallel runs them; see tasks.h.
#include <Rcpp.h>

#include <cstring>
#include <memory>

#include "entry.h"
#include "rng.h"
#include "tasks.h"

namespace {

// The state of the chunk a worker runs: what its tasks gave so far, and
// which one runs (for the handlers in R/worker.R, when a task fails).
struct Chunk {
  SEXP values = R_NilValue;  // preserved while set
  int position = 0;          // 1-based, in the chunk
  void set(SEXP v) {
    if (values != R_NilValue) R_ReleaseObject(values);
    values = v;
    if (v != R_NilValue) R_PreserveObject(v);
    position = 0;
  }
} chunk;

// `base::quote(value)`: an argument evaluated to `value`, as do.call(quote
// = TRUE) passes its arguments.
SEXP quoted(SEXP value) {
  static SEXP quote = [] {
    SEXP f = Rf_lang3(R_DoubleColonSymbol, R_BaseSymbol, Rf_install("quote"));
    R_PreserveObject(f);
    return f;
  }();
  return Rf_lang2(quote, value);
}

// Extra arguments as a call's argument list (pairlist), named as given.
SEXP argument_list(SEXP values, SEXP head = R_NilValue) {
  SEXP names = Rf_getAttrib(values, R_NamesSymbol);
  SEXP out = PROTECT(head);
  for (R_xlen_t i = Rf_xlength(values) - 1; i >= 0; --i) {
    out = Rf_lcons(quoted(VECTOR_ELT(values, i)), out);
    UNPROTECT(1);
    PROTECT(out);
    if (names != R_NilValue && CHAR(STRING_ELT(names, i))[0] != '\0')
      SET_TAG(out, Rf_installChar(STRING_ELT(names, i)));
  }
  UNPROTECT(1);
  return out;
}

// x[[i]] of a plain vector (the scheduler sends columns without
// attributes).
SEXP element(SEXP x, R_xlen_t i) {
  switch (TYPEOF(x)) {
    case LGLSXP: return Rf_ScalarLogical(LOGICAL_ELT(x, i));
    case INTSXP: return Rf_ScalarInteger(INTEGER_ELT(x, i));
    case REALSXP: return Rf_ScalarReal(REAL_ELT(x, i));
    case CPLXSXP: return Rf_ScalarComplex(COMPLEX_ELT(x, i));
    case RAWSXP: return Rf_ScalarRaw(RAW_ELT(x, i));
    case STRSXP: return Rf_ScalarString(STRING_ELT(x, i));
    default: return VECTOR_ELT(x, i);
  }
}

// The element of `list` named `name`, or NULL.
SEXP field(SEXP list, const char* name) {
  SEXP names = Rf_getAttrib(list, R_NamesSymbol);
  for (R_xlen_t i = 0; i < Rf_xlength(names); ++i)
    if (std::strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return VECTOR_ELT(list, i);
  return R_NilValue;
}

}  // namespace

void bgpool::forget_chunk() { chunk.set(R_NilValue); }

// Runs the job of a chunk request on its elements, and returns their
// values. Tasks are called as parLapply() (lapply() on the worker) and
// clusterMap() (do.call() per element) call them: from a frame whose
// enclosure is the base namespace (and so the global environment next),
// holding nothing of bgpool's:
//   lapply: FUN(X[[i]], ...) in a frame with X (the chunk), FUN, i and the
//           extra arguments as `...`; the element is forced first;
//   map:    FUN(quote(x1[[i]]), quote(x2[[i]]), ..., <MoreArgs>), named as
//           the inputs are, as do.call(quote = TRUE) makes it.
// If a task fails, R jumps out to the worker's handlers, which ask
// worker_position() and worker_chunk_values() how far the chunk got.
// With a `seed` (an L'Ecuyer-CMRG .Random.seed), the task of element e of
// the call (`start` + i, or `index`[`start` + i] in a re-run of some
// elements) runs with stream e of `seed`, the first being `seed`.
SEXP worker_run_elements(SEXP job, SEXP inputs, double start) {
  bool is_map = std::strcmp(CHAR(STRING_ELT(field(job, "kind"), 0)), "map") == 0;
  SEXP fun = field(job, "fun");
  SEXP extra = field(job, "extra");
  SEXP seed = field(job, "seed");
  SEXP index = field(job, "index");
  SEXP names = field(job, "names");
  R_xlen_t n = is_map ? Rf_xlength(VECTOR_ELT(inputs, 0)) : Rf_xlength(inputs);
  chunk.set(Rf_allocVector(VECSXP, n));
  SEXP values = chunk.values;
  std::unique_ptr<bgpool::TaskStreams> streams;
  if (seed != R_NilValue) streams = std::make_unique<bgpool::TaskStreams>(seed);
  R_xlen_t first = static_cast<R_xlen_t>(start);
  SEXP frame = PROTECT(R_NewEnv(R_BaseNamespace, TRUE, 29));
  static SEXP x_sym = Rf_install("X"), fun_sym = Rf_install("FUN"), i_sym = Rf_install("i");
  SEXP lapply_call = R_NilValue;
  if (!is_map) {
    Rf_defineVar(x_sym, inputs, frame);
    Rf_defineVar(fun_sym, fun, frame);
    // `...` as a closure's frame has it: the extra arguments, or missing
    SEXP dots = R_MissingArg;
    if (Rf_xlength(extra) > 0) {
      dots = argument_list(extra);
      SET_TYPEOF(dots, DOTSXP);
    }
    PROTECT(dots);
    Rf_defineVar(R_DotsSymbol, dots, frame);
    SEXP element = PROTECT(Rf_lang3(R_Bracket2Symbol, x_sym, i_sym));
    lapply_call = Rf_lang3(fun_sym, element, R_DotsSymbol);
    UNPROTECT(2);
  }
  PROTECT(lapply_call);
  Rcpp::unwindProtect([&] {
    for (R_xlen_t i = 0; i < n; ++i) {
      chunk.position = static_cast<int>(i + 1);
      if (streams) {
        double element = index == R_NilValue ? first + i + 1 : REAL(index)[first + i];
        streams->enter(static_cast<uint64_t>(element) - 1);
      }
      SEXP value;
      if (is_map) {
        SEXP args = PROTECT(argument_list(extra));
        for (R_xlen_t j = Rf_xlength(inputs) - 1; j >= 0; --j) {
          args = Rf_lcons(quoted(element(VECTOR_ELT(inputs, j), i)), args);
          UNPROTECT(1);
          PROTECT(args);
          if (names != R_NilValue && CHAR(STRING_ELT(names, j))[0] != '\0')
            SET_TAG(args, Rf_installChar(STRING_ELT(names, j)));
        }
        SEXP call = PROTECT(Rf_lcons(fun, args));
        value = Rf_eval(call, frame);
        UNPROTECT(2);
      } else {
        // a new `i` each time, as lapply() makes it: a task may keep it
        SEXP index_value = PROTECT(Rf_ScalarInteger(static_cast<int>(i + 1)));
        Rf_defineVar(i_sym, index_value, frame);
        UNPROTECT(1);
        value = R_forceAndCall(lapply_call, 1, frame);
      }
      if (MAYBE_REFERENCED(value)) value = Rf_lazy_duplicate(value);  // as lapply() does
      if (value != R_NilValue) SET_VECTOR_ELT(values, i, value);
    }
    return R_NilValue;
  });
  UNPROTECT(2);
  return values;
}

// Which element of the chunk runs now (1-based; 1 for a call request).
int worker_position() { return chunk.position > 0 ? chunk.position : 1; }

// The values of the elements before the one running now.
SEXP worker_chunk_values() {
  if (chunk.values == R_NilValue || chunk.position <= 1) return R_NilValue;
  return Rf_xlengthgets(chunk.values, chunk.position - 1);
}

// do.call(fun, args, quote = TRUE), as clusterCall() makes it, without
// do.call()'s own frame: fun(base::quote(a1), name = base::quote(a2), ...)
// evaluated in a frame whose enclosure is the base namespace. A function
// given by name is found from there.
SEXP worker_call(SEXP fun, SEXP args) {
  SEXP frame = PROTECT(R_NewEnv(R_BaseNamespace, FALSE, 0));
  SEXP what = TYPEOF(fun) == STRSXP ? Rf_installChar(STRING_ELT(fun, 0)) : fun;
  SEXP call = PROTECT(Rf_lcons(what, argument_list(args)));
  SEXP value = Rcpp::unwindProtect([&] { return Rf_eval(call, frame); });
  UNPROTECT(2);
  return value;
}

// The routines R/worker.R and the psock workers call (see entry.h).

extern "C" SEXP C_worker_run_elements(SEXP job, SEXP inputs, SEXP start) {
  return bgpool::guarded([&] { return worker_run_elements(job, inputs, Rf_asReal(start)); });
}

extern "C" SEXP C_worker_position() { return Rf_ScalarInteger(worker_position()); }

extern "C" SEXP C_worker_chunk_values() {
  return bgpool::guarded([] { return worker_chunk_values(); });
}

extern "C" SEXP C_worker_call(SEXP fun, SEXP args) {
  return bgpool::guarded([&] { return worker_call(fun, args); });
}
