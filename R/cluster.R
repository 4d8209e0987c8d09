# The pool as a `parallel` cluster. Its nodes implement the methods that
# parallel's cluster functions dispatch on (sendData, recvData,
# recvOneData), so parLapply(), clusterApplyLB(), foreach's doParallel and
# future's cluster backend run on bgpool's workers and transport.
#
# A node is its slot, its pool's handle and `con`, an R connection that
# future's backend polls with socketSelect() to learn whether a reply is
# ready (src/node_connection.h; no TCP socket). Everything else about a
# node (calls awaiting replies, replies read but not yet asked for) lives
# in the native pool, src/nodes.h; these methods forward to it.

#' The pool as a `parallel` cluster
#'
#' Returns the pool as a cluster object that `parallel`'s functions accept:
#' [parallel::parLapply()], [parallel::parSapply()], [parallel::clusterMap()],
#' [parallel::clusterApplyLB()], [parallel::clusterExport()],
#' [parallel::clusterEvalQ()], [parallel::clusterCall()],
#' [parallel::clusterSetRNGStream()] and the others. Through it, foreach runs
#' on the pool with `doParallel::registerDoParallel(pool_cluster())`, and
#' future with `future::plan(future::cluster, workers = pool_cluster())`.
#' Calls go through bgpool's transport; a worker that dies is reported as
#' that node's error and replaced at the next call.
#' [parallel::stopCluster()] on the cluster deletes the pool.
#'
#' While calls sent through the cluster are unfinished (futures not yet
#' resolved), `pool_*()` functions wait for them before they run. An
#' interrupt while waiting for a node abandons the cluster's calls in
#' flight, as it does for `pool_*()` calls: `parallel` would otherwise take
#' their replies for answers to later calls. What calls through the
#' cluster set up on the workers (as `clusterEvalQ()` does) is not replayed
#' on a worker that replaces a dead one; use [pool_evalq()] for that.
#'
#' With the "psock" backend (Windows; see [bgpool_options]), the cluster is
#' `parallel`'s own socket cluster of the pool's workers: call
#' `pool_cluster()` again after a worker was replaced.
#'
#' @return An object of class `c("bgpool_cluster", "cluster")`, one node per
#'   worker; the same object for the life of the pool. With the "psock"
#'   backend, of class `c("bgpool_psock_cluster", "SOCKcluster", "cluster")`.
#' @examples
#' init_pool(2)
#' cl <- pool_cluster()
#' parallel::parSapply(cl, 1:4, function(i) i^2)
#' parallel::clusterApplyLB(cl, 1:3, function(i) i + 1)
#' parallel::stopCluster(cl)
#' pool_exists()
#' @export
pool_cluster <- function() {
  handle <- live_pool("pool_cluster()")
  # the "psock" backend's is parallel's own cluster, whose nodes change
  # when workers are replaced
  if (.bgpool$backend$name == "psock") return(.bgpool$backend$cluster(handle))
  if (is.null(.bgpool$cluster)) .bgpool$cluster <- .bgpool$backend$cluster(handle)
  .bgpool$cluster
}

new_node <- function(slot, handle) {
  node <- new.env(parent = emptyenv())
  node$slot <- slot
  node$handle <- handle
  node$con <- pool_node_connection(handle, slot)
  class(node) <- "bgpool_node"
  node
}

close_cluster <- function() {
  for (node in .bgpool$cluster) try(close(node$con), silent = TRUE)
  .bgpool$cluster <- NULL
}

# Whether a node belongs to the pool that exists now (not a deleted one).
in_current_pool <- function(node) {
  identical(node$handle, .bgpool$pool) && pool_exists()
}

# The pool handle of a node, if its pool still exists.
node_pool <- function(node) {
  if (!in_current_pool(node))
    abort("this cluster's pool has been deleted; create one with init_pool() and get its cluster with pool_cluster()",
          "bgpool_no_pool")
  node$handle
}

#' @exportS3Method parallel::sendData
sendData.bgpool_node <- function(node, data) {
  # stopCluster() on part of a cluster; deleting the pool is delete_pool()'s
  if (identical(data$type, "DONE")) return(invisible(NULL))
  handle <- node_pool(node)
  if (!identical(data$type, "EXEC"))
    abort(sprintf("the pool's cluster cannot take parallel messages of type \"%s\"", data$type),
          "bgpool_bad_argument")
  live_pool("the pool's cluster", drain_cluster = FALSE)
  pool_node_send(handle, node$slot, data$data$fun, data$data$args, data$data$tag)
  invisible(NULL)
}

#' @exportS3Method parallel::recvData
recvData.bgpool_node <- function(node) {
  parallel_reply(pool_node_receive(node_pool(node), node$slot))
}

#' @exportS3Method parallel::recvOneData
recvOneData.bgpool_cluster <- function(cl) {
  handle <- node_pool(cl[[1L]])
  slots <- vapply(unclass(cl), `[[`, 0L, "slot")
  got <- pool_node_receive_any(handle, slots)
  list(node = match(got$slot, slots), value = parallel_reply(got$reply))
}

#' @exportS3Method parallel::stopCluster
stopCluster.bgpool_cluster <- function(cl = NULL) {
  if (in_current_pool(cl[[1L]]))
    delete_pool()
  invisible(NULL)
}

#' @exportS3Method parallel::stopCluster
stopCluster.bgpool_psock_cluster <- function(cl = NULL) {
  if (identical(attr(cl, "pool"), .bgpool$pool) && pool_exists())
    delete_pool()
  invisible(NULL)
}

#' @export
print.bgpool_cluster <- function(x, ...) {
  state <- if (length(x) && in_current_pool(x[[1L]]))
    "" else " (its pool has been deleted)"
  cat(sprintf("bgpool cluster of %d nodes%s\n", length(x), state))
  invisible(x)
}

#' @export
print.bgpool_node <- function(x, ...) {
  cat(sprintf("bgpool cluster node %d\n", x$slot))
  invisible(x)
}

# A node's reply (src/nodes.h: list(tag, reply, lost)) as parallel's
# workers send it, list(type = "VALUE", value, success, time, tag), a
# failed call's value being a "try-error" string. The tasks' warnings are
# signalled here, as parallel asks for the reply.
parallel_reply <- function(got) {
  failure <- function(message)
    structure(message, class = c("snow-try-error", "try-error"))
  if (!is.null(got$lost)) {
    lost <- got$lost
    output <- if (nzchar(lost$output)) paste0("\nIts last output:\n", lost$output) else ""
    value <- failure(sprintf("%s %s; it is replaced at the next call%s",
                             lost_worker_label(lost), lost$how, output))
    return(list(type = "VALUE", value = value, success = FALSE, time = 0, tag = got$tag))
  }
  reply <- got$reply
  resignal_warnings(reply[[REPLY_WARNINGS]])
  error <- reply[[REPLY_ERROR]]
  value <- if (is.null(error)) reply[[REPLY_VALUES]][[1L]]
           else failure(conditionMessage(error[[SIGNAL_CONDITION]]))
  list(type = "VALUE", value = value, success = is.null(error), time = reply[[REPLY_ELAPSED]],
       tag = got$tag)
}
