# Workers on other machines. A host's workers are forked there by a
# template that ssh starts; ssh forwards a socket there to the pool's
# private socket here, so that the host's template and workers connect to
# the master through the SSH connection: the master opens no TCP port, and
# the pool's token travels encrypted, on ssh's standard input.

#' Workers on other machines, over SSH
#'
#' Describes workers that [init_pool()] starts on other machines through
#' OpenSSH: `init_pool(remote = ssh_workers(c("node1", "node2"), per_host =
#' 4))` starts 4 workers on each host. Per host, one `ssh` connection
#' starts one R process there, which forks that host's workers, as the
#' pool does on this machine; every worker connects back through that
#' connection (a forwarded Unix socket), so no port is opened to the
#' network.
#'
#' Each host needs R with bgpool installed, a POSIX login shell, and
#' `ssh` logins without a password prompt (keys or an agent: `ssh` runs
#' with `BatchMode=yes`). The SSH server must allow stream forwarding
#' (OpenSSH's default, `AllowStreamLocalForwarding yes`).
#'
#' Remote workers work as local ones do with every `pool_*()` function.
#' An export crosses each connection once: the host's template keeps it in
#' shared memory, which that host's workers map; other values (arguments,
#' results) travel whole over each worker's connection. They start in the master's working directory if it
#' exists on their host (else in the login directory), and `init_pool()`
#' resets them to it likewise. A worker lost (its process killed, its
#' host's connection cut) gives the same error as a local one, naming the
#' host; the next call starts a new one there. When the connection ends, or
#' the master does, the host's workers exit and remove their files.
#'
#' @param hosts Host names (or `user@host`), as `ssh` takes them; each at
#'   most once.
#' @param per_host How many workers each host runs: one number, or one per
#'   host.
#' @param rscript The Rscript program on the hosts.
#' @param rscript_args Further arguments for it there.
#' @param rscript_envs Environment variables for the workers there, such
#'   as `c(R_LIBS = "/opt/R/library")`.
#' @param ssh The ssh program here.
#' @param ssh_args Further options for `ssh`, such as `c("-p", "2222")` or
#'   `c("-F", "~/.ssh/pool_config")`; they come before bgpool's own, so
#'   they take precedence.
#' @return An object of class `bgpool_ssh_workers`, for `init_pool(remote
#'   = )`.
#' @examples
#' \dontrun{
#' init_pool(remote = ssh_workers(c("node1", "node2"), per_host = 2))
#' x <- 42
#' pool_export("x")
#' pool_sapply(1:10, function(y) x + y)
#' delete_pool()
#' }
#' @export
ssh_workers <- function(hosts, per_host = 1L, rscript = "Rscript", rscript_args = character(),
                        rscript_envs = character(), ssh = "ssh", ssh_args = character()) {
  fail <- function(what) abort(sprintf("ssh_workers(): %s", what), "bgpool_bad_argument")
  if (!is.character(hosts) || !length(hosts) || anyNA(hosts) || !all(nzchar(hosts)))
    fail("`hosts` must be host names, such as c(\"node1\", \"node2\")")
  if (anyDuplicated(hosts))
    fail(sprintf("host %s is given more than once; give each host once and set `per_host`",
                 hosts[anyDuplicated(hosts)]))
  if (grepl("^-", hosts[1L]) || any(grepl("^-|\\s", hosts)))
    fail("a host name cannot start with \"-\" or hold spaces; give ssh's options in `ssh_args`")
  ok <- is.numeric(per_host) && length(per_host) %in% c(1L, length(hosts)) &&
    !anyNA(per_host) && all(per_host >= 1 & per_host == round(per_host) & is.finite(per_host))
  if (!ok)
    fail("`per_host` must be a whole number of workers, 1 or more: one number, or one per host")
  check_launcher(fail, list(rscript = rscript, ssh = ssh),
                 list(rscript_args = rscript_args, ssh_args = ssh_args), rscript_envs)
  ssh <- program_path(ssh, fail, "install OpenSSH's client or give its path")
  structure(list(hosts = hosts, per_host = as.integer(rep_len(per_host, length(hosts))),
                 rscript = rscript, rscript_args = rscript_args,
                 rscript_envs = rscript_envs, ssh = ssh, ssh_args = ssh_args),
            class = "bgpool_ssh_workers")
}

#' @export
print.bgpool_ssh_workers <- function(x, ...) {
  cat(sprintf("<bgpool ssh_workers: %s>\n",
              paste0(x$hosts, " (", x$per_host, ")", collapse = ", ")))
  invisible(x)
}

# Checks shared by the launchers: `strings` must each be one non-empty
# string, `vectors` character vectors, `rscript_envs` named values.
check_launcher <- function(fail, strings, vectors, rscript_envs) {
  for (name in names(strings)) {
    x <- strings[[name]]
    if (!is.character(x) || length(x) != 1L || is.na(x) || !nzchar(x))
      fail(sprintf("`%s` must be one non-empty string", name))
  }
  for (name in names(vectors))
    if (!is.character(vectors[[name]]) || anyNA(vectors[[name]]))
      fail(sprintf("`%s` must be a character vector", name))
  if (length(rscript_envs) && (!is.character(rscript_envs) || anyNA(rscript_envs) ||
                                 is.null(names(rscript_envs)) || !all(nzchar(names(rscript_envs)))))
    fail("`rscript_envs` must be named values, such as c(R_LIBS = \"/opt/R/library\")")
}

# The path of a program here (the core starts it without a shell).
program_path <- function(program, fail, advice) {
  path <- if (grepl("/", program, fixed = TRUE)) program else Sys.which(program)
  if (!nzchar(path) || file.access(path, 1L) != 0L)
    fail(sprintf("%s is not a program that can be run here; %s", program, advice))
  unname(path)
}

check_remote <- function(remote) {
  if (!is.null(remote) && !inherits(remote, c("bgpool_ssh_workers", "bgpool_slurm_workers")))
    abort("init_pool(): `remote` must be NULL or made by ssh_workers() or slurm_workers()",
          "bgpool_bad_argument")
  remote
}

remote_size <- function(remote) if (is.null(remote)) 0L else sum(remote$per_host)

# How pool_create() starts each host's template: this machine's first
# (`local` workers, `command` from template_command()), then the remote
# hosts' (`started`: from start_remote()), in `total` slots.
host_commands <- function(local, command, started, total, options) {
  host <- function(name, program, args, env, workers, ...) {
    utils::modifyList(list(name = name, program = program, args = args, env = env,
                           workers = workers, destination = "", remote_socket = "",
                           remote_command = "", tcp = FALSE, log_path = ""), list(...))
  }
  here <- host("", command$program, command$args, command$env, local)
  remote <- started$remote
  if (is.null(remote)) return(list(here))
  there <- lapply(seq_along(remote$hosts), function(i) {
    if (inherits(remote, "bgpool_slurm_workers")) {
      job <- started$jobs[i]
      log <- file.path(started$dir, paste0(job, ".log"))
      command <- remote_template_command(remote, i, total, options, token_file = started$token)
      return(host(paste("Slurm job", job), remote$sbatch,
                  c(slurm_options(remote, job, log), paste0("--wrap=", command)), character(),
                  remote$per_host[i], tcp = TRUE, log_path = log))
    }
    socket <- sprintf("/tmp/bgpool-%s.sock", pool_random_name())
    host(remote$hosts[i], remote$ssh,
         c(remote$ssh_args, "-T", "-x", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
           "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"),
         character(), remote$per_host[i], destination = remote$hosts[i], remote_socket = socket,
         remote_command = remote_template_command(remote, i, total, options, socket = socket))
  })
  c(list(here), there)
}

# The shell command that runs a host's template there. Over ssh, it reads
# the pool's token from ssh's standard input, which stays open as the
# template's lifeline (descriptor 5), and the forwarded `socket` goes when
# it ends. A batch job reads the token from `token_file` (BGPOOL_SOCKET
# comes with the job's environment) and its template holds its workers'
# lifeline itself. The template's output (3 and 4) goes to the host's log
# here; the host's temporary directory goes when it ends.
remote_template_command <- function(remote, index, total, options, socket = NULL,
                                    token_file = NULL) {
  packages <- paste(c("datasets", "utils", "grDevices", "graphics", "stats",
                      if (options$methods) "methods"), collapse = ",")
  envs <- c(BGPOOL_SLOTS = total, BGPOOL_HOST = index, BGPOOL_REMOTE = 1,
            if (!is.null(token_file)) c(BGPOOL_OWN_LIFELINE = 1), remote$rscript_envs)
  r <- paste(shQuote(c(remote$rscript, paste0("--default-packages=", packages),
                       remote$rscript_args, "-e", "bgpool:::template_main()")),
             collapse = " ")
  ssh <- !is.null(socket)
  paste0(
    "cd ", shQuote(getwd()), " 2>/dev/null; s=", if (ssh) socket else "", "; ",
    "d=$(mktemp -d \"${TMPDIR:-/tmp}/bgpool-XXXXXX\") || exit 70; ",
    "trap 'rm -rf \"$d\" $s' EXIT; trap 'exit 1' HUP INT TERM; ",
    "IFS= read -r BGPOOL_TOKEN", if (!ssh) paste(" <", shQuote(token_file)), " || exit 70; ",
    "export BGPOOL_TOKEN; ", paste0(names(envs), "=", shQuote(envs), collapse = " "),
    if (ssh) " BGPOOL_SOCKET=\"$s\"", " TMPDIR=\"$d\" ", r,
    if (ssh) " 5<&0", " 3>&1 4>&2")
}
