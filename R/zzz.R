.onLoad <- function(libname, pkgname) {
  # The template and the native workers it forks call only the routines of
  # src/entry.h, which need no Rcpp: loading its namespace would cost them
  # half again R's start. Everywhere else, bgpool's routines need Rcpp's.
  if (!nzchar(Sys.getenv("BGPOOL_SOCKET"))) load_rcpp()
  # For the tests of the "psock" backend on Linux: the native routines that
  # Windows does not build (src/windows/absent.cpp) fail here as they would
  # there, so that a call of one from the backend's code is caught.
  absent <- Sys.getenv("BGPOOL_TEST_ABSENT_ROUTINES")
  if (nzchar(absent)) {
    ns <- topenv()
    for (name in strsplit(absent, ",", fixed = TRUE)[[1L]])
      assign(name, routine_absent(name), envir = ns)
  }
}

routine_absent <- function(name) {
  force(name)
  function(...) stop(sprintf("bgpool: %s() is not built on Windows; the psock backend called it", name),
                     call. = FALSE)
}

.onUnload <- function(libpath) {
  if (pool_exists()) stop_pool()
}

# Loads Rcpp's namespace, as `::` does.
load_rcpp <- function() invisible(Rcpp::evalCpp)
