.onUnload <- function(libpath) {
  if (pool_exists()) stop_pool()
}
