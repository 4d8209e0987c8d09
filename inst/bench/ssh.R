# Remote workers over SSH: bgpool's ssh_workers() against parallel's
# makePSOCKcluster() with the same hosts and mirai's ssh_config() (when
# installed), in one run. The two hosts are 127.0.0.1 and 127.0.0.2 of a
# real sshd that this script starts (tests/testthat/helper-sshd.R), 2
# workers on each: the numbers are those of SSH and R, not of a network.
#
#   make bench-ssh                      # or, from the repository's root:
#   R_LIBS=$PWD/.lib Rscript inst/bench/ssh.R [--quick] [--out FILE]
#
# Rows: start (until every worker has answered once), round trip (one call
# on every worker: median of `calls`), and export of a numeric vector of
# `export_mb` MB to every worker followed by a sum on each, checked.

suppressPackageStartupMessages({
  library(bgpool)
  library(parallel)
})
args <- commandArgs(trailingOnly = TRUE)
quick <- "--quick" %in% args
out <- if ("--out" %in% args) {
  args[which(args == "--out") + 1L]
} else {
  file.path("inst", "bench", if (quick) "results-ssh-quick.md" else "results-ssh.md")
}
CFG <- if (quick) list(reps = 2L, calls = 50L, export_mb = 10) else
  list(reps = 5L, calls = 200L, export_mb = 100)
source(file.path("tests", "testthat", "helper-sshd.R"))
if (!nzchar(sshd_program())) stop("sshd is not installed: run `bash .ci/tools.sh` as root")

server <- sshd_start()
on.exit(sshd_stop(server), add = TRUE)
hosts <- server$hosts
per_host <- 2L
n <- per_host * length(hosts)
rscript <- file.path(R.home("bin"), "Rscript")
now <- function() as.numeric(Sys.time())
say <- function(...) message(sprintf(...))
big <- seq_len(CFG$export_mb * 1e6 / 8) + 0.5
expected_sum <- sum(big)
rows <- list()
add <- function(what, peer, seconds) {
  rows[[length(rows) + 1L]] <<- data.frame(workload = what, backend = peer, seconds = seconds)
  say("%-12s %-8s %.6f s", what, peer, seconds)
}
check <- function(ok, what) if (!isTRUE(ok)) stop("WRONG RESULT: ", what, call. = FALSE)
round_trip <- function(call) {
  for (i in 1:10) call()
  times <- vapply(seq_len(CFG$calls), function(i) { t0 <- now(); call(); now() - t0 }, 0)
  stats::median(times)
}

# bgpool
remote <- ssh_workers(hosts, per_host = per_host, rscript = rscript,
                      rscript_envs = c(R_LIBS = paste(.libPaths(), collapse = ":")),
                      ssh_args = server$ssh_args)
starts <- vapply(seq_len(CFG$reps), function(r) {
  t0 <- now()
  suppressMessages(init_pool(remote = remote))
  pids <- unlist(pool_call(Sys.getpid))
  t <- now() - t0
  check(length(unique(pids)) == n, "bgpool start")
  suppressMessages(delete_pool())
  t
}, 0)
add("start", "bgpool", min(starts))
suppressMessages(init_pool(remote = remote))
add("round trip", "bgpool", round_trip(function() pool_call(function() 1)))
exports <- vapply(seq_len(CFG$reps), function(r) {
  t0 <- now()
  pool_export("big")
  sums <- unlist(pool_evalq(sum(big)))
  t <- now() - t0
  check(identical(sums, rep(expected_sum, n)), "bgpool export")
  t
}, 0)
add("export", "bgpool", min(exports))
suppressMessages(delete_pool())

# parallel's PSOCK cluster, started over the same ssh (its workers connect
# back to a TCP port of the master)
psock <- function() {
  makePSOCKcluster(rep(hosts, each = per_host), rshcmd = paste("ssh", paste(server$ssh_args, collapse = " ")),
                   master = "127.0.0.1", rscript = rscript, homogeneous = FALSE)
}
starts <- vapply(seq_len(CFG$reps), function(r) {
  t0 <- now()
  cl <- psock()
  pids <- unlist(clusterCall(cl, Sys.getpid))
  t <- now() - t0
  check(length(unique(pids)) == n, "psock start")
  stopCluster(cl)
  t
}, 0)
add("start", "psock", min(starts))
cl <- psock()
add("round trip", "psock", round_trip(function() clusterCall(cl, function() 1)))
exports <- vapply(seq_len(CFG$reps), function(r) {
  t0 <- now()
  clusterExport(cl, "big")
  sums <- unlist(clusterEvalQ(cl, sum(big)))
  t <- now() - t0
  check(identical(sums, rep(expected_sum, n)), "psock export")
  t
}, 0)
add("export", "psock", min(exports))
stopCluster(cl)

# mirai (2.x) with ssh_config(): one daemon per remote entry, started by
# ssh, connecting back to the master over TCP as PSOCK's workers do
# (its `tunnel = TRUE` forwards a TCP port, which cannot work when both
# hosts are this machine). Wrappers give ssh the test server's
# configuration and Rscript this session's library.
mirai_version <- if (requireNamespace("mirai", quietly = TRUE)) utils::packageVersion("mirai")
has_mirai <- !is.null(mirai_version) && mirai_version >= "2.0.0"
if (has_mirai) {
  wrapper <- function(name, line) {
    path <- file.path(tempdir(), name)
    writeLines(c("#!/bin/sh", line), path)
    Sys.chmod(path, "0755")
    path
  }
  ssh_wrapper <- wrapper("ssh", sprintf("exec ssh %s \"$@\"", paste(server$ssh_args, collapse = " ")))
  r_wrapper <- wrapper("Rscript", sprintf("R_LIBS=%s exec %s \"$@\"",
                                          paste(.libPaths(), collapse = ":"), rscript))
  port <- sub("^\\s*Port ", "", grep("^\\s*Port ", readLines(server$ssh_args[2]), value = TRUE)[1])
  remote <- mirai::ssh_config(sprintf("ssh://%s:%s", rep(hosts, each = per_host), port),
                              command = ssh_wrapper, rscript = r_wrapper)
  mirai_start <- function() {
    mirai::daemons(n, url = mirai::host_url(), remote = remote, dispatcher = FALSE)
    # (without dispatcher, everywhere() reaches the daemons connected so far)
    deadline <- now() + 60
    while (mirai::status()$connections < n && now() < deadline) Sys.sleep(0.005)
    unlist(mirai::everywhere(Sys.getpid())[])
  }
  starts <- vapply(seq_len(CFG$reps), function(r) {
    t0 <- now()
    pids <- mirai_start()
    t <- now() - t0
    check(length(unique(pids)) == n, "mirai start")
    mirai::daemons(0)
    t
  }, 0)
  add("start", "mirai", min(starts))
  mirai_start()
  add("round trip", "mirai", round_trip(function() mirai::everywhere(1)[]))
  exports <- vapply(seq_len(CFG$reps), function(r) {
    t0 <- now()
    mirai::everywhere({}, big = big)
    sums <- unlist(mirai::everywhere(sum(big))[])
    t <- now() - t0
    check(identical(sums, rep(expected_sum, n)), "mirai export")
    t
  }, 0)
  add("export", "mirai", min(exports))
  mirai::daemons(0)
}

results <- do.call(rbind, rows)
load <- readLines("/proc/loadavg")
lines <- c(
  "# Remote workers over SSH: 2 hosts x 2 workers",
  "",
  sprintf("Generated by `Rscript inst/bench/ssh.R%s` on %s, %d cores, %s, bgpool %s; load average %s.",
          if (quick) " --quick" else "", format(Sys.time(), "%Y-%m-%d %H:%M UTC", tz = "UTC"),
          parallel::detectCores(), R.version.string, as.character(packageVersion("bgpool")), load),
  sprintf("Hosts %s of one sshd on this machine; every time is the minimum over %d repetitions, the round trip the median of %d calls. %s",
          paste(hosts, collapse = " and "), CFG$reps, CFG$calls,
          if (has_mirai) sprintf("mirai %s: `daemons(url = host_url(), remote = ssh_config(...))`, `everywhere()`.", mirai_version)
          else "mirai is not installed (`Rscript .ci/deps.R mirai`): its columns are left out."),
  "",
  if (has_mirai) "| workload | bgpool (s) | PSOCK (s) | PSOCK / bgpool | mirai (s) | mirai / bgpool |"
  else "| workload | bgpool (s) | PSOCK (s) | PSOCK / bgpool |",
  if (has_mirai) "|---|---|---|---|---|---|" else "|---|---|---|---|")
for (what in c("start", "round trip", "export")) {
  time_of <- function(peer) results$seconds[results$workload == what & results$backend == peer]
  b <- time_of("bgpool")
  label <- if (what == "export") sprintf("export %g MB + sum on each", CFG$export_mb) else what
  row <- sprintf("| %s | %.6f | %.6f | %.2fx |", label, b, time_of("psock"), time_of("psock") / b)
  if (has_mirai) row <- paste0(row, sprintf(" %.6f | %.2fx |", time_of("mirai"), time_of("mirai") / b))
  lines <- c(lines, row)
}
writeLines(lines, out)
cat(lines, sep = "\n")
