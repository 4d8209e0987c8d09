# The pool as a `parallel` cluster. Its nodes implement the methods that
# parallel's cluster functions dispatch on (sendData, recvData,
# recvOneData), so parLapply(), clusterApplyLB(), foreach's doParallel and
# future's cluster backend run on bgpool's workers and transport.
#
# A node sends a call at once and reads the reply when asked, so nodes run
# side by side. Each node has its worker's `pending` calls (their tags,
# oldest first) and the `replies` read but not yet taken; the pool counts
# both over all nodes (`cluster_pending`, `cluster_kept`), so that a
# message costs the same however many nodes there are. Its `con` is an
# R connection whose descriptor mirrors the worker's socket, or polls as
# ready while a reply waits in `replies`: future's backend asks
# socketSelect() on it whether a result is ready.

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
#' flight, as it does for `pool_*()` calls.
#'
#' @return An object of class `c("bgpool_cluster", "cluster")`, one node per
#'   worker; the same object for the life of the pool.
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
  # future keeps its books per cluster "name" (else a hash of the nodes,
  # which change as calls come and go)
  if (is.null(.bgpool$cluster)) {
    .bgpool$cluster <- structure(lapply(seq_len(pool_size()), new_node, handle = handle),
                                 class = c("bgpool_cluster", "cluster"),
                                 name = basename(pool_state(handle)$dir))
    .bgpool$cluster_pending <- 0L
    .bgpool$cluster_kept <- 0L
  }
  .bgpool$cluster
}

new_node <- function(slot, handle) {
  node <- new.env(parent = emptyenv())
  node$slot <- slot
  node$handle <- handle
  node$pending <- list()
  node$replies <- list()
  node$con <- mirror_connection(handle, slot)
  class(node) <- "bgpool_node"
  node
}

# A connection of the class socketSelect() takes (a listening TCP socket,
# open for the microseconds until its descriptor is replaced by the
# mirror; nothing can connect in between that is ever read).
mirror_connection <- function(handle, slot) {
  before <- pool_open_fds()
  con <- serverSocket(0L)
  fd <- setdiff(pool_open_fds(), before)
  if (length(fd) != 1L) {
    close(con)
    abort("pool_cluster(): could not tell which descriptor R opened for a node; try again",
          "bgpool_start_failed")
  }
  pool_node_mirror(handle, slot, fd, FALSE)
  con
}

close_cluster <- function() {
  for (node in .bgpool$cluster) try(close(node$con), silent = TRUE)
  .bgpool$cluster <- NULL
}

# Whether a node belongs to the pool that exists now (not a deleted one).
in_current_pool <- function(node) {
  identical(node$handle, .bgpool$pool)
}

# The pool handle of a node, if its pool still exists.
node_pool <- function(node) {
  if (!in_current_pool(node))
    abort("this cluster's pool has been deleted; create one with init_pool() and get its cluster with pool_cluster()",
          "bgpool_no_pool")
  node$handle
}

cluster_busy <- function() {
  isTRUE(.bgpool$cluster_pending > 0L)
}

# Reads the replies of all calls sent through the cluster into their nodes.
collect_cluster_replies <- function(handle) {
  for (node in .bgpool$cluster)
    while (length(node$pending)) keep_reply(handle, node, receive_reply(handle, node))
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
  lost <- pool_node_send(handle, node$slot, data$data$fun, data$data$args)
  if (is.null(lost)) {
    node$pending <- c(node$pending, list(data$data$tag))
    .bgpool$cluster_pending <- .bgpool$cluster_pending + 1L
  } else
    keep_reply(handle, node, parallel_reply(lost, data$data$tag))
  invisible(NULL)
}

#' @exportS3Method parallel::recvData
recvData.bgpool_node <- function(node) {
  if (length(node$replies)) return(take_reply(node))
  handle <- node_pool(node)
  await_reply(handle, node$slot)
  deliver(receive_reply(handle, node))
}

#' @exportS3Method parallel::recvOneData
recvOneData.bgpool_cluster <- function(cl) {
  if (.bgpool$cluster_kept > 0L) {
    ready <- which(vapply(cl, function(node) length(node$replies) > 0L, NA))
    if (length(ready)) return(list(node = ready[1L], value = take_reply(cl[[ready[1L]]])))
  }
  handle <- node_pool(cl[[1L]])
  slots <- if (identical(cl, .bgpool$cluster)) seq_along(cl) else vapply(unclass(cl), `[[`, 0L, "slot")
  i <- match(await_reply(handle, slots), slots)
  list(node = i, value = deliver(receive_reply(handle, cl[[i]])))
}

#' @export
stopCluster.bgpool_cluster <- function(cl = NULL) {
  if (in_current_pool(cl[[1L]]))
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

# Waits until one of the nodes in `slots` has a reply to read; returns its
# slot. An interrupt abandons all of the cluster's calls in flight: their
# replies would otherwise answer later calls.
await_reply <- function(handle, slots) {
  finished <- FALSE
  on.exit(if (!finished) abandon_cluster_calls(handle))
  slot <- pool_node_wait(handle, slots, -1)
  finished <- TRUE
  if (slot == 0L)
    abort("parallel asked the pool's cluster for a reply, but no call is waiting for one (it was abandoned by an interrupt, or the pool was reset); run the call again",
          "bgpool_bad_argument")
  slot
}

abandon_cluster_calls <- function(handle) {
  owing <- Filter(function(node) length(node$pending) > 0L, .bgpool$cluster)
  pool_node_cancel(handle, vapply(owing, `[[`, 0L, "slot"))
  for (node in owing) node$pending <- list()
  .bgpool$cluster_pending <- 0L
}

receive_reply <- function(handle, node) {
  reply <- pool_node_receive(handle, node$slot)
  tag <- node$pending[[1L]]
  node$pending <- node$pending[-1L]
  .bgpool$cluster_pending <- .bgpool$cluster_pending - 1L
  parallel_reply(reply, tag)
}

# A worker's reply as parallel's workers send it, `message` =
# list(type = "VALUE", value, success, time, tag), where a failed call's
# value is a "try-error" string; with the call's `warnings`.
parallel_reply <- function(reply, tag) {
  failure <- function(message)
    structure(message, class = c("snow-try-error", "try-error"))
  if (!is.null(reply$lost)) {
    lost <- reply$lost
    output <- if (nzchar(lost$output)) paste0("\nIts last output:\n", lost$output) else ""
    value <- failure(sprintf("worker %d (pid %d) %s; it is replaced at the next call%s",
                             lost$worker, lost$pid, lost$how, output))
    return(list(message = list(type = "VALUE", value = value, success = FALSE, time = 0, tag = tag)))
  }
  error <- reply[[4L]]
  value <- if (is.null(error)) reply[[3L]][[1L]] else failure(error$message)
  list(message = list(type = "VALUE", value = value, success = is.null(error),
                      time = reply[[5L]], tag = tag),
       warnings = reply[[6L]])
}

deliver <- function(reply) {
  resignal_warnings(reply$warnings)
  reply$message
}

# A reply read before parallel asks for it; the node's connection polls
# as ready until it is taken.
keep_reply <- function(handle, node, reply) {
  node$replies <- c(node$replies, list(reply))
  .bgpool$cluster_kept <- .bgpool$cluster_kept + 1L
  pool_node_mirror(handle, node$slot, -1L, TRUE)
}

take_reply <- function(node) {
  reply <- node$replies[[1L]]
  node$replies <- node$replies[-1L]
  if (in_current_pool(node)) {
    .bgpool$cluster_kept <- .bgpool$cluster_kept - 1L
    if (!length(node$replies)) pool_node_mirror(node$handle, node$slot, -1L, FALSE)
  }
  deliver(reply)
}
