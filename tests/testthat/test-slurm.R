# Workers in Slurm jobs: a real one-node cluster (helper-slurm.R) runs
# them; they connect back over TCP and answer the pool's challenge.

slurm <- slurm_cluster()

skip_slurm_on_psock <- function() {
  skip_on_psock("remote workers need the native backend (test-ssh.R checks the psock refusal)")
}

local_slurm_pool <- function(jobs = 2L, per_job = 2L, envir = parent.frame()) {
  init_pool(remote = test_slurm_workers(jobs, per_job))
  withr::defer(delete_pool(), envir = envir)
}

# The port of the TCP socket that process `pid` listens on, or NA.
tcp_listen_port <- function(pid) {
  mine <- socket_inodes(pid)
  for (f in c("/proc/net/tcp", "/proc/net/tcp6")) {
    if (!file.exists(f)) next
    fields <- strsplit(trimws(readLines(f)[-1L]), "\\s+")
    for (x in fields)
      if (x[4L] == "0A" && x[10L] %in% mine)
        return(strtoi(sub(".*:", "", x[2L]), 16L))
  }
  NA_integer_
}

test_that("the seed example and a 100 MB export run on workers in Slurm jobs, which end with the pool", {
  skip_slurm_on_psock()
  slurm$get()
  local_slurm_pool()
  jobs <- slurm_jobs()
  expect_identical(nrow(jobs), 2L)
  expect_identical(jobs$state, c("RUNNING", "RUNNING"))
  info <- bgpool:::pool_info()
  expect_identical(info$hosts, rep(paste("Slurm job", jobs$name), each = 2))
  assign("x", 42, envir = globalenv())
  withr::defer(rm("x", envir = globalenv()))
  pool_export("x")
  expect_identical(pool_sapply(1:10, function(y) x + y), 43:52 + 0)
  # each worker runs in its job (Slurm's variables say which)
  job_ids <- unlist(pool_call(function() Sys.getenv("SLURM_JOB_ID")))
  expect_setequal(job_ids, jobs$id)

  workers <- bgpool:::pool_info()$pids
  before <- vapply(workers, read_bytes, 0)
  expect_big_export()
  # each job's template took the export once; its workers mapped that copy
  expect_lt(max(vapply(workers, read_bytes, 0) - before), 20e6)

  dir <- bgpool:::.bgpool$started$dir
  expect_true(file.exists(file.path(dir, "token")))
  expect_identical(unname(file.mode(file.path(dir, "token"))), as.octmode("600"))
  delete_pool()
  expect_identical(nrow(slurm_jobs()), 0L)
  expect_false(dir.exists(dir))
})

test_that("scancel of a job mid-task gives bgpool_worker_died naming the job, and the next call submits another", {
  skip_slurm_on_psock()
  slurm$get()
  local_slurm_pool()
  jobs <- slurm_jobs()
  victim <- jobs[2L, ]
  err <- tryCatch(pool_lapply(1:8, function(i, scancel, id) {
    if (i == 1) system2(scancel, id)
    Sys.sleep(1)
    i
  }, scancel = slurm_program("scancel"), id = victim$id, chunk.size = 1),
  bgpool_worker_died = function(e) e)
  expect_s3_class(err, "bgpool_worker_died")
  expect_identical(err$host, paste("Slurm job", victim$name))
  expect_match(conditionMessage(err), paste("on Slurm job", victim$name), fixed = TRUE)
  finished <- setdiff(1:8, c(err$unfinished, err$failed))
  expect_identical(err$results[finished], as.list(finished))
  expect_identical(pool_sapply(1:8, function(i) i * 3L), (1:8) * 3L)
  now <- slurm_jobs()
  expect_identical(nrow(now), 2L)
  expect_false(victim$id %in% now$id)  # a new job for that host
  expect_true(victim$name %in% now$name)
})

test_that("a peer without the pool's secret is dropped, and the pool starts regardless", {
  skip_slurm_on_psock()
  cluster <- slurm$get()
  workers <- test_slurm_workers(1L, 1L)
  child <- local_r_child(bquote({
    init_pool(remote = slurm_workers(1L, 1L, rscript = .(workers$rscript),
                                     rscript_envs = .(workers$rscript_envs), master = "127.0.0.1",
                                     dir = .(workers$dir)))
    save_result(pool_sapply(1:3, function(i) i * 2L))
    delete_pool()
  }))
  pid <- child$process$get_pid()
  port <- NA_integer_
  deadline <- Sys.time() + 30
  while (is.na(port) && Sys.time() < deadline && child$process$is_alive()) {
    port <- tcp_listen_port(pid)
    Sys.sleep(0.02)
  }
  skip_if(is.na(port), "the master's port was not seen while its job started")
  con <- socketConnection("127.0.0.1", port, open = "r+b", blocking = TRUE, timeout = 10)
  withr::defer(close(con))
  challenge <- readBin(con, "raw", 32L)
  expect_length(challenge, 32L)
  # a greeting as the job's template would send, with a proof made
  # without the secret
  writeBin(c(charToRaw("BGPOOL3"), as.raw(0L), writeBin(-2L, raw(), size = 4L, endian = "little"),
             as.raw(sample.int(256L, 64L, replace = TRUE) - 1L)), con)
  expect_length(readBin(con, "raw", 1L), 0L)  # dropped: end of stream
  result <- child_result(child)
  expect_identical(attr(result, "status"), 0L)
  expect_identical(c(result), c(2L, 4L, 6L))
})

test_that("the challenge's hash is HMAC-SHA-256 (RFC 4231)", {
  skip_on_psock("the hash is part of the native core, which the Windows build leaves out")
  expect_identical(bgpool:::hmac_sha256_hex("Jefe", charToRaw("what do ya want for nothing?")),
                   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
  key <- rawToChar(rep(as.raw(0x0b), 20))
  expect_identical(bgpool:::hmac_sha256_hex(key, charToRaw("Hi There")),
                   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
})

test_that("the master's death ends its Slurm jobs", {
  skip_slurm_on_psock()
  slurm$get()
  workers <- test_slurm_workers(1L, 1L)
  child <- local_r_child(bquote({
    init_pool(remote = slurm_workers(1L, 1L, rscript = .(workers$rscript),
                                     rscript_envs = .(workers$rscript_envs), master = "127.0.0.1",
                                     dir = .(workers$dir)))
    say("pids", unlist(pool_call(Sys.getpid)))
    Sys.sleep(60)
  }))
  worker <- child_numbers(child, "pids")
  expect_identical(nrow(slurm_jobs()), 1L)
  child$process$kill()  # the master alone (its job shares its environment, which kill_tree() follows)
  expect_true(wait_pids_gone(worker, timeout = 15))
  deadline <- Sys.time() + 20
  while (nrow(slurm_jobs()) > 0L && Sys.time() < deadline) Sys.sleep(0.2)
  expect_identical(nrow(slurm_jobs()), 0L)
})
