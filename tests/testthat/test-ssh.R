# Workers on other machines over OpenSSH: a real sshd (helper-sshd.R) on
# two loopback addresses stands for two hosts.

sshd <- sshd_server()

skip_remote_on_psock <- function() {
  skip_on_psock("remote workers need the native backend (the psock run checks its refusal)")
}

# A pool of 2 hosts x 2 workers, deleted when the test ends.
local_ssh_pool <- function(server, per_host = 2L, size = 0L, envir = parent.frame()) {
  init_pool(size, remote = test_ssh_workers(server, per_host))
  withr::defer(delete_pool(), envir = envir)
}

command_args <- function(pid) {
  raw <- tryCatch(readBin(file.path("/proc", pid, "cmdline"), "raw", 1e6), error = function(e) raw())
  strsplit(rawToChar(replace(raw, raw == as.raw(0L), as.raw(10L))), "\n", fixed = TRUE)[[1L]]
}

# The ssh processes that process `parent` started to reach `host` (any
# host when NULL).
ssh_pids <- function(host = NULL, parent = Sys.getpid()) {
  Filter(function(pid) {
    a <- command_args(pid)
    length(a) && basename(a[1L]) == "ssh" && (is.null(host) || host %in% a)
  }, child_pids(parent))
}

# The sockets on the hosts that those ssh processes forward to the pool's.
forwarded_sockets <- function(parent = Sys.getpid()) {
  unlist(lapply(ssh_pids(parent = parent), function(pid) {
    a <- command_args(pid)
    sub(":.*$", "", a[which(a == "-R") + 1L])
  }))
}

# The remote hosts' templates and workers running on this machine (the
# test hosts' processes are ours): those started with BGPOOL_REMOTE set.
remote_pool_processes <- function() {
  pids <- as.integer(basename(Sys.glob("/proc/[0-9]*")))
  has <- vapply(pids, function(pid) {
    env <- tryCatch(suppressWarnings(readBin(file.path("/proc", pid, "environ"), "raw", 1e6)),
                    error = function(e) raw())
    text <- rawToChar(replace(env, env == as.raw(0L), as.raw(10L)))
    any(startsWith(strsplit(text, "\n", fixed = TRUE)[[1L]], "BGPOOL_REMOTE="))
  }, NA)
  pids[has]
}

test_that("the seed example and a 100 MB export run on two SSH hosts", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server)
  expect_identical(pool_size(), 4L)
  info <- bgpool:::pool_info()
  expect_identical(info$hosts, rep(server$hosts, each = 2))
  assign("x", 42, envir = globalenv())
  withr::defer(rm("x", envir = globalenv()))
  pool_export("x")
  expect_identical(pool_sapply(1:10, function(y) x + y), 43:52 + 0)
  # every worker answers, each its own process
  pids <- unlist(pool_call(Sys.getpid))
  expect_identical(sort(pids), sort(info$pids))
  expect_length(unique(pids), 4L)

  big <- expect_big_export()
  # large results come back whole too
  back <- pool_lapply(1:2, function(i) big * i)
  expect_identical(back[[2]], big * 2)

  # init_pool() with the same hosts resets the same workers
  expect_message(init_pool(remote = test_ssh_workers(server)), NA)
  expect_identical(bgpool:::pool_info()$pids, info$pids)
  expect_identical(unlist(pool_evalq(exists("x"))), rep(FALSE, 4))
  expect_identical(unlist(pool_evalq(getwd())), rep(getwd(), 4))
})

test_that("an export crosses each SSH connection once, however many workers the host has", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server)
  ssh <- vapply(server$hosts, function(host) ssh_pids(host)[1], 0)
  big <- seq_len(12.5e6) + 0.5  # 100 MB, to 2 workers on each host
  assign("big", big, envir = globalenv())
  withr::defer(rm("big", envir = globalenv()))
  before <- vapply(ssh, read_bytes, 0)
  pool_export("big")
  carried <- vapply(ssh, read_bytes, 0) - before
  expect_true(all(carried > 100e6 & carried < 110e6), info = paste(carried, collapse = " "))
  expect_identical(unlist(pool_evalq(sum(big))), rep(sum(big), 4))
  # a worker that replaces a lost one maps the host's copy
  victim <- bgpool:::pool_info()$pids[3]
  tools::pskill(victim, tools::SIGKILL)
  expect_true(wait_pids_gone(victim))
  before <- vapply(ssh, read_bytes, 0)
  expect_identical(unlist(pool_evalq(sum(big))), rep(sum(big), 4))
  expect_lt(max(vapply(ssh, read_bytes, 0) - before), 10e6)
  # a changed value goes again, once
  assign("big", big + 1, envir = globalenv())
  before <- vapply(ssh, read_bytes, 0)
  pool_export("big")
  carried <- vapply(ssh, read_bytes, 0) - before
  expect_true(all(carried > 100e6 & carried < 110e6), info = paste(carried, collapse = " "))
  expect_identical(unlist(pool_evalq(big[1])), rep(big[1] + 1, 4))
})

test_that("seeded tasks, progress and pool_map give the same results on remote workers as locally", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server, per_host = 1L, size = 1L)  # a mixed pool
  expect_identical(bgpool:::pool_info()$hosts, c("", server$hosts))
  remote_values <- pool_sapply(1:12, function(i) stats::runif(1), .seed = 7, chunk.size = 1)
  mapped <- pool_map(function(a, b) a * b, 1:6, 6:1)
  # parallel's functions on the pool's cluster reach the remote workers too
  cl <- pool_cluster()
  expect_identical(parallel::parSapply(cl, 1:6, function(i) i + 1L), 2:7)
  expect_setequal(unlist(parallel::clusterCall(cl, Sys.getpid)), bgpool:::pool_info()$pids)
  delete_pool()
  init_pool(2)
  expect_identical(pool_sapply(1:12, function(i) stats::runif(1), .seed = 7), remote_values)
  expect_identical(mapped, as.list((1:6) * (6:1)))
})

test_that("a remote worker killed mid-task gives bgpool_worker_died naming its host, and is replaced", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server)
  before <- bgpool:::pool_info()
  err <- tryCatch(pool_lapply(1:8, function(i) {
    if (i == 3) tools::pskill(Sys.getpid(), tools::SIGKILL)
    Sys.sleep(0.2)
    i
  }, chunk.size = 1), bgpool_worker_died = function(e) e)
  expect_s3_class(err, "bgpool_worker_died")
  expect_identical(err$host, before$hosts[err$worker])
  expect_match(conditionMessage(err), sprintf("worker %d (pid %d on %s) was killed by SIGKILL",
                                              err$worker, err$pid, err$host), fixed = TRUE)
  expect_true(3L %in% err$unfinished)
  finished <- setdiff(1:8, c(err$unfinished, err$failed))
  expect_identical(err$results[finished], as.list(finished))
  expect_true(wait_pids_gone(err$pid))
  # the next call starts a new worker on that host
  expect_identical(pool_sapply(1:8, function(i) i * 2), (1:8) * 2)
  after <- bgpool:::pool_info()
  expect_identical(after$hosts, before$hosts)
  expect_false(err$pid %in% after$pids)
  expect_true(all(after$usable))
})

test_that(".retry re-runs a lost remote worker's elements and .timeout stops a remote task", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server)
  marker <- tempfile()
  withr::defer(unlink(marker))
  values <- pool_sapply(1:8, function(i, marker) {
    if (i == 5 && !file.exists(marker)) {
      file.create(marker)
      tools::pskill(Sys.getpid(), tools::SIGKILL)
    }
    i
  }, marker = marker, .retry = 1, chunk.size = 1)
  expect_identical(values, 1:8)
  expect_true(file.exists(marker))

  err <- tryCatch(pool_sapply(1:4, function(i) { if (i == 2) Sys.sleep(60); i },
                              .timeout = 1, chunk.size = 1),
                  bgpool_task_timeout = function(e) e)
  expect_s3_class(err, "bgpool_task_timeout")
  expect_true(nzchar(err$host))
  expect_identical(err$unfinished, 2L)
  expect_true(wait_pids_gone(err$pid))  # killed on its host, through its template
  expect_identical(pool_sapply(1:4, identity), 1:4)
})

test_that("cutting a host's SSH connection loses its workers, named, and the next call reconnects", {
  skip_remote_on_psock()
  server <- sshd$get()
  local_ssh_pool(server)
  info <- bgpool:::pool_info()
  lost_host <- server$hosts[2]
  on_lost_host <- info$pids[info$hosts == lost_host]
  ssh <- ssh_pids(lost_host)
  expect_length(ssh, 1L)
  err <- tryCatch(pool_lapply(1:8, function(i, ssh) {
    if (i == 1) tools::pskill(ssh, tools::SIGKILL)
    Sys.sleep(0.5)
    i
  }, ssh = ssh, chunk.size = 1), bgpool_worker_died = function(e) e)
  expect_s3_class(err, "bgpool_worker_died")
  expect_identical(err$host, lost_host)
  expect_match(conditionMessage(err), paste("on", lost_host), fixed = TRUE)
  finished <- setdiff(1:8, c(err$unfinished, err$failed))
  expect_identical(err$results[finished], as.list(finished))
  # the host's workers exit with their connection
  expect_true(wait_pids_gone(on_lost_host, timeout = 10))
  expect_identical(pool_sapply(1:8, function(i) i + 1L), 2:9)
  expect_length(ssh_pids(lost_host), 1L)
  expect_true(all(bgpool:::pool_info()$usable))
})

test_that("nothing is left on the hosts after delete_pool() or when the master is killed", {
  skip_remote_on_psock()
  server <- sshd$get()
  before <- remote_pool_processes()
  local_ssh_pool(server)
  pids <- bgpool:::pool_info()$pids
  sockets <- forwarded_sockets()
  expect_length(sockets, 2L)
  expect_true(all(file.exists(sockets)))
  delete_pool()
  expect_true(wait_pids_gone(pids))
  expect_identical(setdiff(remote_pool_processes(), before), integer())
  expect_false(any(file.exists(sockets)))

  child <- local_r_child(bquote({
    init_pool(remote = ssh_workers(.(server$hosts), per_host = 1L,
                                   rscript = .(file.path(R.home("bin"), "Rscript")),
                                   rscript_envs = c(R_LIBS = .(paste(.libPaths(), collapse = ":"))),
                                   ssh_args = .(server$ssh_args)))
    say("pids", paste(unlist(pool_call(Sys.getpid)), collapse = " "))
    Sys.sleep(60)
  }))
  remote_pids <- child_numbers(child, "pids")
  expect_length(remote_pids, 2L)
  sockets <- forwarded_sockets(child$process$get_pid())
  expect_length(sockets, 2L)
  child$process$kill()  # the master alone: its ssh processes go with it
  expect_true(wait_pids_gone(remote_pids, timeout = 10))
  deadline <- Sys.time() + 10
  while (length(setdiff(remote_pool_processes(), before)) && Sys.time() < deadline) Sys.sleep(0.1)
  expect_identical(setdiff(remote_pool_processes(), before), integer())
  expect_false(any(file.exists(sockets)))
})

test_that("a host lost for good: the next call says which and why", {
  skip_remote_on_psock()
  sshd$get()  # (skips where sshd cannot run)
  own <- sshd_start()  # a server of this test's own, stopped below
  withr::defer(sshd_stop(own))
  local_ssh_pool(own, per_host = 1L)
  ssh <- ssh_pids(own$hosts[2])
  own$process$kill()  # no new logins; the open connections stay
  tools::pskill(ssh, tools::SIGKILL)
  expect_true(wait_pids_gone(ssh))
  err <- tryCatch(pool_sapply(1:4, identity), error = function(e) e)
  expect_s3_class(err, "bgpool_start_failed")
  expect_match(conditionMessage(err), sprintf("ssh to %s (which starts its workers) exited with status 255",
                                              own$hosts[2]), fixed = TRUE)
  expect_match(conditionMessage(err), "Connection refused", fixed = TRUE)
})

test_that("a host that cannot be reached fails init_pool() with ssh's own words", {
  skip_remote_on_psock()
  server <- sshd$get()
  # nothing listens on 127.0.0.3 at sshd's port
  err <- tryCatch(init_pool(remote = test_ssh_workers(server, 1L, hosts = "127.0.0.3")),
                  error = function(e) e)
  expect_s3_class(err, "bgpool_start_failed")
  expect_match(conditionMessage(err), "ssh to 127.0.0.3 (which starts its workers) exited with status 255",
               fixed = TRUE)
  expect_match(conditionMessage(err), "Connection refused", fixed = TRUE)
  expect_false(pool_exists())
})

test_that("ssh_workers() checks its arguments, and the psock backend refuses remote workers", {
  expect_error(ssh_workers(character()), class = "bgpool_bad_argument")
  expect_error(ssh_workers(c("a", "a")), "more than once", class = "bgpool_bad_argument")
  expect_error(ssh_workers("-oProxyCommand=x"), "ssh_args", class = "bgpool_bad_argument")
  expect_error(ssh_workers("a", per_host = 0), "per_host", class = "bgpool_bad_argument")
  expect_error(ssh_workers("a", per_host = 1:2), "per_host", class = "bgpool_bad_argument")
  expect_error(ssh_workers("a", ssh = "no-such-ssh-program"), "not a program",
               class = "bgpool_bad_argument")
  expect_error(init_pool(remote = "node1"), "ssh_workers", class = "bgpool_bad_argument")
  expect_output(print(ssh_workers(c("a", "b"), per_host = 2:3)), "a (2), b (3)", fixed = TRUE)
  if (on_psock())
    expect_error(init_pool(remote = ssh_workers("a")), "need the native backend",
                 class = "bgpool_start_failed")
})
