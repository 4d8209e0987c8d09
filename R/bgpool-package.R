#' bgpool: a fast, robust background worker pool
#'
#' A pool of background R processes with the interface of AzureRMR's pool
#' ([init_pool()], [pool_export()], [pool_lapply()], [pool_sapply()],
#' [pool_map()], [pool_call()], [pool_evalq()]) and the semantics of the
#' `parallel` functions they follow. The pool is one shared resource per R
#' session: it lives from [init_pool()] until [delete_pool()] or the end of
#' the session.
#'
#' @keywords internal
#' @useDynLib bgpool, .registration = TRUE
"_PACKAGE"
