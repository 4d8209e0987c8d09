# OpenSSH's server as two real SSH hosts for the remote-worker tests
# (test-ssh.R): one sshd, run as the current user on a free high port of
# 127.0.0.1 and 127.0.0.2, with a throwaway host key and a key pair made
# for the test, so a pool spans two "hosts" and only this machine is ever
# contacted. A test file makes one with
#
#   sshd <- sshd_server()     # at the file's top level
#   test_that("...", { hosts <- sshd$get(); ... })
#
# The server starts at the first get(), which skips (saying why) only when
# OpenSSH's server is not installed or cannot run here, and is stopped when
# the file ends.

sshd_program <- function() {
  found <- Sys.which("sshd")
  if (nzchar(found)) return(unname(found))
  if (file.exists("/usr/sbin/sshd")) "/usr/sbin/sshd" else ""
}

sshd_server <- function(envir = parent.frame()) {
  available <- function() {
    if (!nzchar(sshd_program()))
      testthat::skip("OpenSSH's server (sshd) is not installed: `bash .ci/tools.sh` installs Debian's openssh-server as root")
    if (!nzchar(Sys.which("ssh-keygen")) || !nzchar(Sys.which("ssh")))
      testthat::skip("OpenSSH's client (ssh, ssh-keygen) is not installed")
  }
  lazy_daemon("sshd", available, sshd_start, sshd_stop, envir)
}

# A free TCP port on 127.0.0.1 (the kernel's pick), to give sshd.
free_port <- function() {
  for (port in sample(20000:60000, 50)) {
    con <- tryCatch(suppressWarnings(serverSocket(port)), error = function(e) NULL)
    if (!is.null(con)) {
      close(con)
      return(port)
    }
  }
  stop("no free port found")
}

# Starts sshd in the foreground (-D, its log to a file with -E) and waits
# until an ssh login to both addresses runs a command. Returns the hosts,
# the ssh options that reach them (`ssh_args`: a client configuration with
# the port, the key and the known hosts), the process and its log.
sshd_start <- function(timeout = 20) {
  dir <- tempfile("sshd-")
  dir.create(dir, mode = "0700")
  keygen <- function(file)
    processx::run("ssh-keygen", c("-q", "-t", "ed25519", "-N", "", "-f", file))
  keygen(file.path(dir, "host_key"))
  keygen(file.path(dir, "client_key"))
  file.copy(file.path(dir, "client_key.pub"), file.path(dir, "authorized_keys"))
  user <- Sys.info()[["effective_user"]]
  # sshd run by root wants its privilege separation directory
  if (user == "root" && !dir.exists("/run/sshd")) dir.create("/run/sshd", mode = "0755")
  port <- free_port()
  hosts <- c("127.0.0.1", "127.0.0.2")
  writeLines(c(
    sprintf("Port %d", port), sprintf("ListenAddress %s", hosts),
    sprintf("HostKey %s", file.path(dir, "host_key")),
    sprintf("AuthorizedKeysFile %s", file.path(dir, "authorized_keys")),
    sprintf("PidFile %s", file.path(dir, "sshd.pid")),
    "StrictModes no", "UsePAM no", "PasswordAuthentication no",
    "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
    if (user == "root") "PermitRootLogin prohibit-password",
    "AllowStreamLocalForwarding yes", "X11Forwarding no",
    "PermitUserEnvironment no", "LogLevel VERBOSE"),
    file.path(dir, "sshd_config"))
  writeLines(c(
    "Host *", sprintf("  Port %d", port),
    sprintf("  IdentityFile %s", file.path(dir, "client_key")), "  IdentitiesOnly yes",
    sprintf("  UserKnownHostsFile %s", file.path(dir, "known_hosts")),
    "  StrictHostKeyChecking accept-new", "  LogLevel ERROR"),
    file.path(dir, "ssh_config"))
  log <- file.path(dir, "sshd.log")
  proc <- processx::process$new(sshd_program(),
                                c("-D", "-f", file.path(dir, "sshd_config"), "-E", log),
                                stdout = NULL, stderr = log, cleanup = TRUE, supervise = TRUE)
  server <- list(process = proc, pid = proc$get_pid(), dir = dir, log = log, hosts = hosts,
                 ssh_args = c("-F", file.path(dir, "ssh_config")))
  deadline <- Sys.time() + timeout
  for (host in hosts) repeat {
    ok <- tryCatch(processx::run("ssh", c(server$ssh_args, "-o", "BatchMode=yes", host, "true"),
                                 timeout = 10, error_on_status = FALSE)$status == 0,
                   error = function(e) FALSE)
    if (ok) break
    if (!proc$is_alive() || Sys.time() > deadline) {
      out <- if (file.exists(log)) paste(utils::tail(readLines(log, warn = FALSE), 20), collapse = "\n") else ""
      try(sshd_stop(server), silent = TRUE)
      stop(sprintf("no ssh login to %s within %d s (sshd %s). Its log:\n%s", host, timeout,
                   if (proc$is_alive()) "running" else "exited", out), call. = FALSE)
    }
    Sys.sleep(0.1)
  }
  server
}

# Stops the server (its sessions go with it) and removes its files.
sshd_stop <- function(server) {
  if (is.null(server)) return(invisible())
  if (server$process$is_alive()) {
    server$process$signal(tools::SIGTERM)
    server$process$wait(5000)
    if (server$process$is_alive()) server$process$kill()
  }
  unlink(server$dir, recursive = TRUE)
  invisible()
}

# Workers on the two test hosts: bgpool from this session's library.
test_ssh_workers <- function(server, per_host = 2L, hosts = server$hosts) {
  ssh_workers(hosts, per_host = per_host, rscript = file.path(R.home("bin"), "Rscript"),
              rscript_envs = c(R_LIBS = paste(.libPaths(), collapse = ":")),
              ssh_args = server$ssh_args)
}
