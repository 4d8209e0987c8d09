// The messages between the master and its workers, defined once.
//
// A request and a reply are R lists read by position. R/protocol.R gives
// the same positions (1-based there) the same names, and the test
// test-protocol.R checks that the two agree (protocol_constants()).
//
// Every request gets exactly one reply, in order.
#pragma once

namespace bgpool {
namespace protocol {

// What a request asks.
enum Kind : int {
  kChunk = 1,  // apply the call's job to a run of consecutive elements
  kCall = 2,   // do.call(job, data) once
};

// A request: list(kind, call, start, data, job, share).
enum Request : int {
  kRequestKind,   // Kind
  kRequestCall,   // the call's number (double): its replies carry it back
  kRequestStart,  // chunk: how many of the call's elements come before it
  kRequestData,   // chunk: its inputs; call: the argument list
  kRequestJob,    // chunk: the job (function, fixed arguments, seed), with
                  // a call's first chunk to a worker only, else NULL;
                  // call: the function
  kRequestShare,  // the size in bytes from which the reply's vectors go as
                  // shared memory (Inf: never)
  kRequestFields
};

// A reply: list(call, start, values, error, elapsed, warnings).
enum Reply : int {
  kReplyCall,      // the request's call number
  kReplyStart,     // the request's start
  kReplyValues,    // a list: the value of each element run (up to an error)
  kReplyError,     // NULL, or a Signal: the element whose task failed
  kReplyElapsed,   // seconds the worker spent on the request
  kReplyWarnings,  // a list of Signals: the warnings the tasks raised
  kReplyFields
};

// A condition raised by a task: list(position, condition), the position
// (1-based) of its element in the request.
enum Signal : int {
  kSignalPosition,
  kSignalCondition,
  kSignalFields
};

}  // namespace protocol
}  // namespace bgpool
