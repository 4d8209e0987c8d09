// What the set-up log (R/setup.R) needs to know of a value it records.
#include <Rcpp.h>

namespace {

// Whether `x` holds, within it, an environment that may change after it
// was looked at: any but the global, base, empty, namespace and package
// environments (which travel by name). Promises count; so does anything
// deeper than the walk goes.
bool holds_environment(SEXP x, int depth) {
  if (depth > 64) return true;
  switch (TYPEOF(x)) {
    case ENVSXP:
      return !(x == R_GlobalEnv || x == R_BaseEnv || x == R_BaseNamespace || x == R_EmptyEnv ||
               R_IsNamespaceEnv(x) || R_IsPackageEnv(x));
    case PROMSXP:
      return true;
    case CLOSXP:
      return holds_environment(CLOENV(x), depth + 1) || holds_environment(FORMALS(x), depth + 1) ||
             holds_environment(BODY(x), depth + 1);
    case VECSXP:
    case EXPRSXP:
      for (R_xlen_t i = 0; i < XLENGTH(x); ++i)
        if (holds_environment(VECTOR_ELT(x, i), depth + 1)) return true;
      break;
    case LISTSXP:
    case LANGSXP:
      for (SEXP cell = x; cell != R_NilValue; cell = CDR(cell))
        if (holds_environment(CAR(cell), depth + 1)) return true;
      break;
    default:
      break;
  }
  return ATTRIB(x) != R_NilValue && holds_environment(ATTRIB(x), depth + 1);
}

}  // namespace

// Whether a snapshot of `x` must be taken to keep it as it is now: it
// holds environments other than those that travel by name.
// [[Rcpp::export(rng = false)]]
bool holds_environments(SEXP x) { return holds_environment(x, 0); }
