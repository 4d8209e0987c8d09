# The messages between the master and its workers, as src/protocol.h
# defines them: what a request asks (KIND_*), and the positions of the
# fields of a request, a reply and a task's condition (1-based here).
# test-protocol.R checks that these agree with the C++ header.

KIND_CHUNK <- 1L  # apply the call's job to a run of consecutive elements
KIND_CALL <- 2L   # do.call(job, data) once

REQUEST_KIND <- 1L
REQUEST_CALL <- 2L   # the call's number; its replies carry it back
REQUEST_START <- 3L  # how many of the call's elements come before the chunk
REQUEST_DATA <- 4L   # the chunk's inputs, or the call's argument list
REQUEST_JOB <- 5L    # the job (with a call's first chunk to a worker), or the function
REQUEST_SHARE <- 6L  # bytes from which the reply's vectors go as shared memory

REPLY_CALL <- 1L
REPLY_START <- 2L
REPLY_VALUES <- 3L    # the value of each element run, up to a failure
REPLY_ERROR <- 4L     # NULL, or a signal: the element whose task failed
REPLY_ELAPSED <- 5L   # seconds the worker spent on the request
REPLY_WARNINGS <- 6L  # signals: the warnings the tasks raised

SIGNAL_POSITION <- 1L   # the element's position in the request
SIGNAL_CONDITION <- 2L  # the condition

signal <- function(position, condition) list(position, condition)
