// The routines the template and the native workers call. Those processes
// do not load Rcpp (R/zzz.R): its namespace's S4 set-up costs half as much
// as R's own start. So these are plain .Call routines that reach none of
// the routines Rcpp registers for its API (its vectors, Rcpp::stop(),
// RObject), and raise R errors themselves; Rcpp's headers serve only for
// Rcpp::unwindProtect().
#pragma once

#include <Rcpp.h>

#include <cstdio>
#include <exception>

namespace bgpool {

// Runs body() (returning a SEXP): a C++ exception becomes an R error and an
// R error or interrupt caught by Rcpp::unwindProtect() goes on, in both
// cases once every C++ frame of body() is unwound.
template <typename Body>
SEXP guarded(Body body) {
  char message[1024] = "";
  SEXP jump = nullptr;
  try {
    return body();
  } catch (const Rcpp::LongjumpException& e) {
    jump = e.token;
  } catch (const std::exception& e) {
    std::snprintf(message, sizeof message, "%s", e.what());
  }
  if (jump) Rcpp::internal::resumeJump(jump);
  Rf_error("%s", message);
}

}  // namespace bgpool
