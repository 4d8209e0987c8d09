// Interrupts and time limits noticed without jumping; see interrupts.h.
#include "interrupts.h"

#include <Rcpp.h>

#include "clock.h"
#include "r_internals.h"
#include "wait.h"

namespace bgpool {
namespace interrupts {

namespace {

SEXP pending_condition = R_NilValue;  // preserved while set
double last_check = 0;

SEXP run_check(void*) {
  R_CheckUserInterrupt();
  return R_NilValue;
}

SEXP keep_condition(SEXP condition, void*) { return condition; }

}  // namespace

bool pending() { return pending_condition != R_NilValue; }

bool poll() {
  if (pending()) return true;
  double now = monotonic_seconds();
  if (now - last_check < kWaitSlice) return false;
  last_check = now;
  static SEXP classes = [] {
    SEXP c = Rf_allocVector(STRSXP, 2);
    R_PreserveObject(c);
    SET_STRING_ELT(c, 0, Rf_mkChar("interrupt"));
    SET_STRING_ELT(c, 1, Rf_mkChar("error"));
    return c;
  }();
  SEXP condition = R_tryCatch(run_check, nullptr, classes, keep_condition, nullptr, nullptr, nullptr);
  if (condition == R_NilValue) return false;
  R_PreserveObject(condition);
  pending_condition = condition;
  return true;
}

void raise_pending() {
  if (!pending()) return;
  SEXP condition = pending_condition;
  pending_condition = R_NilValue;
  Rcpp::unwindProtect([&] {
    PROTECT(condition);
    R_ReleaseObject(condition);
    if (Rf_inherits(condition, "interrupt")) {
      Rf_onintr();
    } else {
      SEXP call = PROTECT(Rf_lang2(Rf_install("stop"), condition));
      Rf_eval(call, R_BaseEnv);
      UNPROTECT(1);
    }
    UNPROTECT(1);
    return R_NilValue;
  });
}

void check() {
  poll();
  raise_pending();
}

}  // namespace interrupts
}  // namespace bgpool
