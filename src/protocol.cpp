// The protocol's constants, for R (see protocol.h).
#include <Rcpp.h>

#include "protocol.h"

// The positions of protocol.h (1-based, as R counts), by the names that
// R/protocol.R gives them: test-protocol.R checks that the two agree.
// [[Rcpp::export(rng = false)]]
Rcpp::IntegerVector protocol_constants() {
  using namespace bgpool::protocol;
  return Rcpp::IntegerVector::create(
      Rcpp::Named("KIND_CHUNK") = kChunk, Rcpp::Named("KIND_CALL") = kCall,
      Rcpp::Named("REQUEST_KIND") = kRequestKind + 1,
      Rcpp::Named("REQUEST_CALL") = kRequestCall + 1,
      Rcpp::Named("REQUEST_START") = kRequestStart + 1,
      Rcpp::Named("REQUEST_DATA") = kRequestData + 1,
      Rcpp::Named("REQUEST_JOB") = kRequestJob + 1,
      Rcpp::Named("REQUEST_SHARE") = kRequestShare + 1,
      Rcpp::Named("REPLY_CALL") = kReplyCall + 1, Rcpp::Named("REPLY_START") = kReplyStart + 1,
      Rcpp::Named("REPLY_VALUES") = kReplyValues + 1,
      Rcpp::Named("REPLY_ERROR") = kReplyError + 1,
      Rcpp::Named("REPLY_ELAPSED") = kReplyElapsed + 1,
      Rcpp::Named("REPLY_WARNINGS") = kReplyWarnings + 1,
      Rcpp::Named("SIGNAL_POSITION") = kSignalPosition + 1,
      Rcpp::Named("SIGNAL_CONDITION") = kSignalCondition + 1);
}
