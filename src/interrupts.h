// How the master notices an interrupt (Ctrl-C) or a time limit
// (setTimeLimit()) while it waits, in one place.
//
// R acts on both only inside R_CheckUserInterrupt(), by jumping. A wait in
// the middle of a message must not jump (the link would be left
// half-used), so poll() runs R's check under R_tryCatch(): nothing jumps
// and nothing is printed, and the condition R raised is kept. The caller
// finishes what it cannot leave half-done, then raise_pending() signals
// that same condition again where jumping is safe: the user's handlers see
// exactly the interrupt or the time-limit error they would have seen.
#pragma once

namespace bgpool {
namespace interrupts {

// Runs R's check (at most every kWaitSlice seconds; in between it answers
// from the last check) and returns whether a condition is pending.
bool poll();
bool pending();
// Signals the pending condition again, if there is one. R jumps, so call
// this only where C++ frames can unwind (under Rcpp's unwind protection).
void raise_pending();
// poll(), then raise_pending().
void check();

}  // namespace interrupts
}  // namespace bgpool
