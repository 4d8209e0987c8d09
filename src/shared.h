// Large vectors shared with the workers through memory segments: the
// master copies a vector into a segment once, passes its fd to every
// worker, and each maps it copy-on-write as the data of an ALTREP vector,
// so N workers cost one copy instead of N, and no worker allocates it.
#pragma once

#include <Rinternals.h>
#include <R_ext/Rdynload.h>

namespace bgpool {

void register_shared_classes(DllInfo* dll);

}  // namespace bgpool
