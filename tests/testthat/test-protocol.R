# The wire protocol is defined once in src/protocol.h; R/protocol.R names
# the same positions. They must agree.

test_that("R's names for the protocol's fields are the C++ header's", {
  native <- bgpool:::protocol_constants()
  expect_gt(length(native), 10L)
  for (name in names(native))
    expect_identical(get(name, envir = asNamespace("bgpool")), native[[name]], info = name)
  # and R names no field the header lacks
  ours <- grep("^(KIND|REQUEST|REPLY|SIGNAL)_", ls(asNamespace("bgpool")), value = TRUE)
  expect_setequal(ours, names(native))
})
