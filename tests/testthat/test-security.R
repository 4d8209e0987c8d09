# The pool's attack surface: a private directory, a Unix socket that exists
# only while workers start, no TCP listener, and foreign clients of the
# socket that must neither disturb the pool nor be kept connected.

# --- the private directory and its socket ------------------------------------

test_that("the pool's directory is private (0700) and holds the socket while workers start", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  watcher <- start_socket_watcher(pool_socket_glob(), patience = 30)
  withr::defer(if (watcher$is_alive()) watcher$kill())
  with_time_limit(60, suppressMessages(init_pool(2, restart = TRUE)))
  watcher$wait(10000)
  seen <- grep("^(FOUND|NOTFOUND)", watcher$read_all_output_lines(), value = TRUE)
  expect_length(seen, 1L)
  fields <- strsplit(seen[1], " ")[[1]]
  expect_identical(fields[1], "FOUND")
  expect_identical(fields[2], "socket")
  expect_identical(fields[3], "700")
  # nobody in the master's process tree listened on TCP while it listened
  expect_identical(fields[5], "tcp_listen:")

  info <- bgpool:::pool_info()
  expect_identical(normalizePath(dirname(info$dir)), normalizePath(tempdir()))
  expect_match(basename(info$dir), sprintf("^bgpool-%d-", Sys.getpid()))
  dinfo <- file.info(info$dir, extra_cols = TRUE)
  expect_identical(format(dinfo$mode), "700")
  expect_identical(dinfo$uname, Sys.info()[["effective_user"]])
  # what the pool keeps there (logs) is not readable by others either
  files <- list.files(info$dir, full.names = TRUE, all.files = TRUE, no.. = TRUE)
  expect_gt(length(files), 0L)
  modes <- file.info(files)$mode
  expect_true(all((as.integer(modes) %% 64L) == 0L), info = paste(basename(files), format(modes), collapse = ", "))
})

test_that("nothing the pool creates listens on TCP (master, workers, any helper process)", {
  skip_on_os(c("windows", "mac", "solaris"))
  local_pool(2)
  with_time_limit(60, {
    expect_identical(pool_sapply(1:4, function(i) i), 1:4)
    listening <- tcp_listen_inodes()
    check <- function() {
      procs <- c(Sys.getpid(), pool_pids(), descendant_pids())
      for (pid in unique(procs)) {
        held <- intersect(socket_inodes(pid), listening)
        expect_length(held, 0L)
      }
    }
    check()
    # also once a worker has been replaced
    victim <- pool_pids()[1]
    tools::pskill(victim, tools::SIGKILL)
    expect_true(wait_pids_gone(victim))
    expect_identical(pool_sapply(1:4, function(i) i * 2), (1:4) * 2)
    listening <- tcp_listen_inodes()
    check()
  })
})

# --- foreign clients --------------------------------------------------------

foreign_modes <- c("random", "huge", "hello", "none")

check_client_closed <- function(report, within = 2.5) {
  expect_true(report$closed, info = report$output)
  expect_false(report$still_open, info = report$output)
  if (report$closed) expect_lt(report$closed_after, within)
}

test_that("foreign clients of an idle pool cannot connect, and the pool is undisturbed", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  local_pool(2)
  with_time_limit(90, {
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    pids <- pool_pids()
    rss <- vm_rss_mb()
    pattern <- file.path(bgpool:::pool_info()$dir, "socket")
    clients <- start_foreign_clients(pattern, foreign_modes, patience = 2)
    # calls while the clients try
    t0 <- Sys.time()
    for (k in 1:5) expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    expect_lt(elapsed_since(t0), 2)
    reports <- lapply(clients, foreign_client_report)
    for (r in reports) {
      # either there is nothing to connect to, or the pool closes at once
      if (r$connected) check_client_closed(r) else expect_true(r$no_socket, info = r$output)
    }
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    expect_identical(pool_pids(), pids)
    expect_lt(vm_rss_mb() - rss, 50)
  })
})

test_that("foreign clients connecting while the pool starts are dropped; the pool starts and works", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  with_time_limit(90, {
    rss <- vm_rss_mb()
    clients <- start_foreign_clients(pool_socket_glob(), foreign_modes, patience = 20)
    withr::defer(for (p in clients) if (p$is_alive()) p$kill())
    t0 <- Sys.time()
    suppressMessages(init_pool(2, restart = TRUE))
    started <- elapsed_since(t0)
    expect_lt(started, 5)
    pids <- pool_pids()
    expect_length(pids, 2L)
    expect_true(all(pid_alive(pids)))
    t1 <- Sys.time()
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    expect_lt(elapsed_since(t1), 1)
    reports <- lapply(clients, foreign_client_report)
    connected <- vapply(reports, `[[`, NA, "connected")
    # the socket exists for as long as R takes to start: every client got in
    expect_true(all(connected), info = paste(vapply(reports, `[[`, "", "output"), collapse = "\n---\n"))
    for (r in reports[connected]) check_client_closed(r)
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    expect_identical(unlist(pool_call(Sys.getpid)), pids)
    expect_identical(pool_pids(), pids)
    expect_lt(vm_rss_mb() - rss, 50)
  })
})

test_that("foreign clients connecting while a worker is replaced are dropped; the call succeeds", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  local_pool(2)
  with_time_limit(120, {
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    rss <- vm_rss_mb()
    got_in <- 0L
    for (round in 1:5) {
      pids <- pool_pids()
      victim <- pids[1]
      tools::pskill(victim, tools::SIGKILL)
      expect_true(wait_pids_gone(victim))
      clients <- start_foreign_clients(pool_socket_glob(), foreign_modes, patience = 5)
      t0 <- Sys.time()
      expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))  # replaces worker 1
      expect_lt(elapsed_since(t0), 5)
      after <- pool_pids()
      expect_false(victim %in% after)
      expect_identical(after[2], pids[2])
      reports <- lapply(clients, foreign_client_report)
      for (r in reports) {
        if (r$connected) {
          got_in <- got_in + 1L
          check_client_closed(r)
        }
      }
      # no further replacement: the clients did not cost a worker
      expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
      expect_identical(pool_pids(), after)
      if (got_in >= 2L) break
    }
    expect_lt(vm_rss_mb() - rss, 50)
    if (got_in == 0L)
      skip("no foreign client managed to connect in the moment the socket existed during 5 replacements")
  })
})

test_that("a foreign client with the workers' greeting but a wrong token cannot take a worker's place", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  suppressMessages(delete_pool())
  withr::defer(suppressMessages(delete_pool()))
  with_time_limit(60, {
    clients <- start_foreign_clients(pool_socket_glob(), rep("hello", 3), patience = 20)
    withr::defer(for (p in clients) if (p$is_alive()) p$kill())
    suppressMessages(init_pool(2, restart = TRUE))
    pids <- pool_pids()
    # every worker is a process of this pool, not a client
    client_pids <- vapply(clients, function(p) p$get_pid(), 1L)
    expect_false(any(pids %in% client_pids))
    expect_setequal(unlist(pool_call(Sys.getpid)), pids)
    expect_identical(pool_sapply(1:6, function(i) i * 3), (1:6) * 3)
    for (r in lapply(clients, foreign_client_report)) {
      expect_true(r$connected, info = r$output)
      check_client_closed(r)
    }
  })
})

test_that("several silent foreign clients do not hold up the replacement of a worker", {
  skip_on_psock("parallel's workers connect over localhost TCP, to a port open while they start: no private directory or token")
  skip_without_python()
  local_pool(2)
  with_time_limit(120, {
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    pids <- pool_pids()
    tools::pskill(pids[1], tools::SIGKILL)
    expect_true(wait_pids_gone(pids[1]))
    clients <- start_foreign_clients(pool_socket_glob(), rep("none", 6), patience = 5, hold = 15)
    t0 <- Sys.time()
    expect_identical(pool_sapply(1:10, sqrt), sqrt(1:10))
    took <- elapsed_since(t0)
    reports <- lapply(clients, foreign_client_report, timeout = 25)
    connected <- vapply(reports, `[[`, NA, "connected")
    expect_true(any(connected), info = "no client connected during the replacement")
    # a few seconds at most, however many silent clients connected
    expect_lt(took, 3, label = sprintf("replacement with %d silent clients connected took %.2f s",
                                       sum(connected), took))
    for (r in reports[connected]) check_client_closed(r, within = 3)
    expect_false(pids[1] %in% pool_pids())
    expect_identical(pool_pids()[2], pids[2])
  })
})
