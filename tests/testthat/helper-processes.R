# Helpers for the fault, interrupt, security and soak tests: child R
# masters run under a time limit, foreign socket clients, and /proc probes.

# ---------------------------------------------------------------------------
# Time limits in this session

# Evaluates `expr` under an elapsed-time limit, so that a pool call that
# hangs fails the test instead of the whole run. R acts on the limit at its
# next interrupt check, which the pool's waits make every 0.1 s.
with_time_limit <- function(seconds, expr) {
  setTimeLimit(elapsed = seconds, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf), add = TRUE)
  force(expr)
}

elapsed_since <- function(t0) as.numeric(difftime(Sys.time(), t0, units = "secs"))

# ---------------------------------------------------------------------------
# Child R masters
#
# r_child(quote({...})) runs the code in a new Rscript process (with this
# session's library paths and bgpool attached), its stdout and stderr piped
# back. In the child:
#   say(...)          prints one line and flushes it (markers for the test)
#   save_result(x)    hands x back to the test (read by child_result())
#   since(t0)         seconds since t0
# The test follows the child with child_wait_for() and collects it with
# child_result(), both under a time limit: a child that overruns is killed
# (with anything it started) and the test fails with its output.

skip_without_processx <- function() {
  skip_if_not_installed("processx")
}

r_child <- function(code, env = character()) {
  skip_without_processx()
  dir <- tempfile("bgchild-")  # not "bgpool-*-*": that is the pool's own pattern
  dir.create(dir)
  script <- file.path(dir, "child.R")
  result <- file.path(dir, "result.rds")
  prelude <- c(
    sprintf(".bgpool_result_file <- %s", deparse(result)),
    "say <- function(...) { cat(paste(...), '\\n', sep = ''); flush(stdout()) }",
    "save_result <- function(x) saveRDS(x, .bgpool_result_file)",
    "since <- function(t0) as.numeric(difftime(Sys.time(), t0, units = 'secs'))",
    "suppressPackageStartupMessages(library(bgpool))"
  )
  body <- deparse(code, width.cutoff = 500L, control = c("keepNA", "keepInteger", "niceNames", "showAttributes"))
  writeLines(c(prelude, body), script)
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  p <- processx::process$new(
    file.path(R.home("bin"), "Rscript"), script,
    stdout = "|", stderr = "2>&1",
    env = c("current", R_LIBS = libs, env),
    cleanup = TRUE, cleanup_tree = TRUE
  )
  child <- new.env(parent = emptyenv())
  child$process <- p
  child$dir <- dir
  child$result_file <- result
  child$lines <- character()
  child$times <- .POSIXct(numeric())
  child$partial <- ""
  child
}

# Takes in what the child has printed so far, stamping each line with the
# time it was read.
child_read <- function(child, wait_ms = 0) {
  p <- child$process
  if (wait_ms > 0 && p$is_alive()) p$poll_io(wait_ms)
  text <- tryCatch(if (p$is_alive()) p$read_output() else p$read_all_output(),
                   error = function(e) "")
  if (!nzchar(text)) return(invisible(child))
  text <- paste0(child$partial, text)
  parts <- strsplit(text, "\n", fixed = TRUE)[[1L]]
  if (!endsWith(text, "\n")) {
    child$partial <- parts[length(parts)]
    parts <- parts[-length(parts)]
  } else {
    child$partial <- ""
  }
  child$lines <- c(child$lines, parts)
  child$times <- c(child$times, rep(Sys.time(), length(parts)))
  invisible(child)
}

child_output <- function(child) {
  child_read(child)
  paste(c(child$lines, child$partial), collapse = "\n")
}

# Waits (at most `timeout` seconds) for a line matching `pattern`; returns
# list(line, time) or fails the test with the child's output.
child_wait_for <- function(child, pattern, timeout = 30) {
  deadline <- Sys.time() + timeout
  repeat {
    alive <- child$process$is_alive()
    child_read(child, if (alive) 50 else 0)
    hit <- grep(pattern, child$lines)
    if (length(hit)) return(list(line = child$lines[hit[1L]], time = child$times[hit[1L]]))
    if (!alive || Sys.time() > deadline) {
      child_kill(child)
      stop(sprintf("the child R process did not print /%s/ within %g s (%s). Its output:\n%s",
                   pattern, timeout, if (alive) "still running" else "it ended",
                   child_output(child)), call. = FALSE)
    }
  }
}

# The numbers after `tag` on the child's first line starting with it.
child_numbers <- function(child, tag, timeout = 30) {
  line <- child_wait_for(child, paste0("^", tag, "( |$)"), timeout)$line
  as.numeric(strsplit(trimws(sub(paste0("^", tag), "", line)), " +")[[1L]])
}

# Waits for the child to end (at most `timeout` seconds) and returns what it
# saved with save_result(), with its exit status and output. A child that
# overruns is killed with everything it started, and the test fails.
child_result <- function(child, timeout = 60) {
  p <- child$process
  deadline <- Sys.time() + timeout
  while (p$is_alive() && Sys.time() < deadline) child_read(child, 100)
  child_read(child)
  if (p$is_alive()) {
    child_kill(child)
    stop(sprintf("the child R process did not finish within %g s and was killed. Its output:\n%s",
                 timeout, child_output(child)), call. = FALSE)
  }
  p$wait()
  status <- p$get_exit_status()
  if (!file.exists(child$result_file))
    stop(sprintf("the child R process ended (status %s) without a result. Its output:\n%s",
                 format(status), child_output(child)), call. = FALSE)
  result <- readRDS(child$result_file)
  attr(result, "status") <- status
  attr(result, "output") <- child_output(child)
  result
}

# Kills the child and every process it started (also workers in their own
# process groups: processx marks descendants through the environment).
child_kill <- function(child) {
  p <- child$process
  try(p$kill_tree(), silent = TRUE)
  try(p$kill(), silent = TRUE)
  invisible(NULL)
}

# A test-scoped child: killed (with its tree) and its files removed when the
# test ends.
local_r_child <- function(code, env = character(), envir = parent.frame()) {
  child <- r_child(code, env)
  withr::defer({
    child_kill(child)
    unlink(child$dir, recursive = TRUE)
  }, envir = envir)
  child
}

# ---------------------------------------------------------------------------
# /proc probes (Linux)

# Resident memory of a process, in MB.
vm_rss_mb <- function(pid = Sys.getpid()) {
  status <- readLines(file.path("/proc", pid, "status"))
  line <- grep("^VmRSS:", status, value = TRUE)
  as.numeric(sub("^VmRSS:\\s*([0-9]+)\\s*kB.*$", "\\1", line)) / 1024
}

open_fd_count <- function(pid = Sys.getpid()) {
  length(list.files(file.path("/proc", pid, "fd")))
}

# Parent pid and state of every process, from /proc/<pid>/stat.
process_table <- function() {
  stats <- Sys.glob("/proc/[0-9]*/stat")
  rows <- lapply(stats, function(f) {
    # the process may end meanwhile
    line <- tryCatch(suppressWarnings(readLines(f, n = 1L, warn = FALSE)),
                     error = function(e) character())
    if (!length(line)) return(NULL)
    rest <- strsplit(sub("^.*\\)\\s*", "", line), " ", fixed = TRUE)[[1L]]
    data.frame(pid = as.integer(sub("^([0-9]+).*$", "\\1", line)),
               state = rest[1L], ppid = as.integer(rest[2L]))
  })
  do.call(rbind, rows)
}

# Child processes of `pid`, zombies included.
child_pids <- function(pid = Sys.getpid()) {
  table <- process_table()
  table$pid[table$ppid == pid]
}

# Inodes of the sockets a process holds open.
socket_inodes <- function(pid) {
  fds <- list.files(file.path("/proc", pid, "fd"), full.names = TRUE)
  targets <- vapply(fds, function(f) {
    t <- suppressWarnings(Sys.readlink(f))
    if (is.na(t)) "" else t
  }, "", USE.NAMES = FALSE)
  sub("^socket:\\[([0-9]+)\\]$", "\\1", grep("^socket:\\[", targets, value = TRUE))
}

# Inodes of all TCP sockets (IPv4 and IPv6), in any state.
tcp_inodes <- function() {
  inodes <- character()
  for (f in c("/proc/net/tcp", "/proc/net/tcp6")) {
    if (!file.exists(f)) next
    lines <- readLines(f)[-1L]
    if (length(lines)) inodes <- c(inodes, vapply(strsplit(trimws(lines), "\\s+"), `[`, "", 10L))
  }
  inodes
}

# Inodes of all TCP sockets (IPv4 and IPv6) in the LISTEN state (0A).
tcp_listen_inodes <- function() {
  inodes <- character()
  for (f in c("/proc/net/tcp", "/proc/net/tcp6")) {
    if (!file.exists(f)) next
    lines <- readLines(f)[-1L]
    if (!length(lines)) next
    fields <- strsplit(trimws(lines), "\\s+")
    state <- vapply(fields, `[`, "", 4L)
    inode <- vapply(fields, `[`, "", 10L)
    inodes <- c(inodes, inode[state == "0A"])
  }
  inodes
}

# ---------------------------------------------------------------------------
# Foreign clients of the pool's socket (python3, which speaks AF_UNIX)

skip_without_python <- function() {
  skip_without_processx()
  if (!nzchar(Sys.which("python3")))
    skip("python3 is not installed: it is the foreign client of the pool's Unix socket")
}

# The pool's socket: <tempdir>/bgpool-<master pid>-XXXXXX/socket. It exists
# only while the pool listens (while workers start), so clients and the
# watcher below look for it by this pattern.
pool_socket_glob <- function(master_pid = Sys.getpid(), dir = tempdir()) {
  file.path(dir, sprintf("bgpool-%d-*", master_pid), "socket")
}

# A client that waits (up to `patience` s, trying all the time) for a socket
# matching `pattern` to accept it, then sends according to `mode` and
# reports when the pool closed the connection:
#   random  4 KiB of random bytes
#   huge    a forged chunk header announcing 2^62 bytes, then a little payload
#   hello   a greeting with the workers' magic and a wrong token
#   none    nothing at all
# Output lines: READY <t> (looking) | CONNECTED <t> | NOSOCKET <t> <error> |
# EOF <t> | RESET <t> <error> | OPEN <t> (still open after `hold` s) |
# SENDFAIL <t> <error>; <t> is seconds since the client started.
foreign_client_code <- '
import glob, os, socket, struct, sys, time
pattern, mode, patience, hold = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
t0 = time.time()
def say(*a):
    print(*a, flush=True)
def t():
    return "%.3f" % (time.time() - t0)
say("READY", t())
s = None
err = "never appeared"
while time.time() - t0 < patience:
    for path in glob.glob(pattern):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            break
        except OSError as e:
            err = "%s" % e
            s.close()
            s = None
    if s is not None:
        break
    time.sleep(0.0002)
if s is None:
    say("NOSOCKET", t(), err)
    sys.exit(0)
say("CONNECTED", t())
try:
    if mode == "random":
        s.sendall(os.urandom(4096))
    elif mode == "huge":
        s.sendall(struct.pack("<Q", 2 ** 62) + os.urandom(200))
    elif mode == "hello":
        s.sendall(b"BGPOOL2\\x00" + struct.pack("<I", 0) + b"f" * 64)
except OSError as e:
    say("SENDFAIL", t(), e)
s.settimeout(hold)
try:
    while True:
        data = s.recv(65536)
        if not data:
            say("EOF", t())
            break
except socket.timeout:
    say("OPEN", t())
except OSError as e:
    say("RESET", t(), e)
'

python_script <- function(name, code) {
  path <- file.path(tempdir(), name)
  if (!file.exists(path)) writeLines(code, path)
  path
}

# Starts one client per element of `modes`, all at once, and waits until
# every one is looking for the socket.
start_foreign_clients <- function(pattern, modes, patience = 10, hold = 5) {
  script <- python_script("foreign-socket-client.py", foreign_client_code)
  clients <- lapply(modes, function(mode) {
    processx::process$new("python3", c(script, pattern, mode, patience, hold),
                          stdout = "|", stderr = "2>&1", cleanup = TRUE)
  })
  early <- rep("", length(clients))
  deadline <- Sys.time() + 15
  repeat {
    for (i in seq_along(clients))
      if (clients[[i]]$is_alive()) early[i] <- paste0(early[i], clients[[i]]$read_output())
    if (all(grepl("READY", early)) || Sys.time() > deadline) break
    Sys.sleep(0.02)
  }
  for (i in seq_along(clients)) attr(clients[[i]], "early_output") <- early[i]
  clients
}

# Waits for a client to end (at most `timeout` s) and parses its report.
foreign_client_report <- function(p, timeout = 15) {
  p$wait(timeout * 1000)
  if (p$is_alive()) p$kill()
  out <- c(strsplit(attr(p, "early_output"), "\n")[[1L]], p$read_all_output_lines())
  field <- function(line) as.numeric(strsplit(line, " ")[[1L]][2L])
  connected <- grep("^CONNECTED ", out, value = TRUE)
  closed <- grep("^(EOF|RESET) ", out, value = TRUE)
  list(
    output = paste(out, collapse = "\n"),
    connected = length(connected) > 0L,
    closed = length(closed) > 0L,
    # seconds from connecting to the pool closing the connection
    closed_after = if (length(connected) && length(closed))
      field(closed) - field(connected) else NA_real_,
    no_socket = any(grepl("^NOSOCKET ", out)),
    still_open = any(grepl("^OPEN ", out))
  )
}

# Watches for a socket matching `pattern` (trying all the time, for up to
# `patience` s). When it appears, reports whether it is a socket, the mode
# of its directory, how many processes the master (`master_pid`) and its
# descendants are, and which TCP sockets in the LISTEN state they hold at
# that moment:  FOUND <socket|other> <dir mode> <processes> tcp_listen:<inodes>
socket_watcher_code <- '
import glob, os, stat, sys, time
pattern, master, patience = sys.argv[1], sys.argv[2], float(sys.argv[3])
t0 = time.time()
def tcp_listen():
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in open(f).read().splitlines()[1:]:
                fs = line.split()
                if fs[3] == "0A":
                    out.add(fs[9])
        except OSError:
            pass
    return out
def descendants(pid):
    parent = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                parent[p] = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                pass
    out, todo = [pid], [pid]
    while todo:
        q = todo.pop()
        kids = [p for p, pp in parent.items() if pp == q]
        out += kids
        todo += kids
    return out
def socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir("/proc/%s/fd" % pid):
            try:
                t = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if t.startswith("socket:["):
                out.add(t[8:-1])
    except OSError:
        pass
    return out
print("READY", flush=True)
while time.time() - t0 < patience:
    found = glob.glob(pattern)
    if not found:
        time.sleep(0.0002)
        continue
    path = found[0]
    try:
        st = os.lstat(path)
        dmode = "%o" % stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
    except OSError:
        continue
    listen = tcp_listen()
    procs = descendants(master)
    bad = []
    for p in procs:
        bad += sorted(socket_inodes(p) & listen)
    print("FOUND", "socket" if stat.S_ISSOCK(st.st_mode) else "other", dmode, len(procs),
          "tcp_listen:" + ",".join(bad), flush=True)
    sys.exit(0)
print("NOTFOUND", flush=True)
'

start_socket_watcher <- function(pattern, master_pid = Sys.getpid(), patience = 20) {
  p <- processx::process$new("python3",
                             c(python_script("socket-watcher.py", socket_watcher_code),
                               pattern, master_pid, patience),
                             stdout = "|", stderr = "2>&1", cleanup = TRUE)
  deadline <- Sys.time() + 10
  out <- ""
  while (!grepl("READY", out) && p$is_alive() && Sys.time() < deadline) {
    p$poll_io(100)
    out <- paste0(out, p$read_output())
  }
  p
}

# Descendants of `pid` (children, their children, ...), zombies included.
descendant_pids <- function(pid = Sys.getpid()) {
  table <- process_table()
  out <- integer()
  todo <- pid
  while (length(todo)) {
    kids <- table$pid[table$ppid %in% todo]
    kids <- setdiff(kids, out)
    out <- c(out, kids)
    todo <- kids
  }
  out
}
