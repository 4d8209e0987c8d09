# A real one-node Slurm cluster for the Slurm worker tests (test-slurm.R):
# munged with a key generated for the test, slurmctld and slurmd from
# Debian's slurm-wlm, all configured in a temporary directory, on free
# ports of this machine. Slurm's daemons run as root, so the tests run
# where they are root (CI is); elsewhere they skip, saying why. A test
# file makes one with
#
#   slurm <- slurm_cluster()     # at the file's top level
#   test_that("...", { cluster <- slurm$get(); ... })
#
# The cluster starts at the first get() and stops when the file ends; the
# Slurm commands find it through SLURM_CONF, set for the file's tests.

slurm_programs <- c("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")

slurm_program <- function(name) {
  found <- Sys.which(name)
  if (nzchar(found)) return(unname(found))
  for (dir in c("/usr/sbin", "/usr/bin")) if (file.exists(file.path(dir, name))) return(file.path(dir, name))
  ""
}

slurm_cluster <- function(envir = parent.frame()) {
  available <- function() {
    missing <- slurm_programs[!nzchar(vapply(slurm_programs, slurm_program, ""))]
    if (length(missing))
      testthat::skip(sprintf("Slurm is not installed (%s missing): `bash .ci/tools.sh` installs Debian's slurm-wlm and munge as root",
                             paste(missing, collapse = ", ")))
    if (Sys.info()[["effective_user"]] != "root")
      testthat::skip("Slurm's daemons (slurmctld, slurmd) run as root; these tests start them only when run as root")
  }
  lazy_daemon("a Slurm cluster", available, slurm_start, slurm_stop, envir)
}

slurm_start <- function(timeout = 30) {
  dir <- tempfile("slurm-")
  dir.create(dir, mode = "0700")
  for (sub in c("state", "spool")) dir.create(file.path(dir, sub))
  path <- function(...) file.path(dir, ...)
  writeBin(as.raw(sample.int(256L, 1024L, replace = TRUE) - 1L), path("munge.key"))
  Sys.chmod(path("munge.key"), "0600")
  munge <- processx::process$new(
    slurm_program("munged"),
    c("--foreground", "--force", paste0("--key-file=", path("munge.key")),
      paste0("--socket=", path("munge.sock")), paste0("--pid-file=", path("munged.pid")),
      paste0("--log-file=", path("munged.log")), paste0("--seed-file=", path("munged.seed"))),
    stdout = path("munged.out"), stderr = "2>&1", cleanup = TRUE)
  node <- Sys.info()[["nodename"]]
  ports <- c(free_port(), free_port())
  writeLines(c(
    "ClusterName=bgpooltest", sprintf("SlurmctldHost=%s(127.0.0.1)", node),
    sprintf("SlurmctldPort=%d", ports[1]), sprintf("SlurmdPort=%d", ports[2]),
    "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
    sprintf("AuthInfo=socket=%s", path("munge.sock")),
    sprintf("StateSaveLocation=%s", path("state")), sprintf("SlurmdSpoolDir=%s", path("spool")),
    sprintf("SlurmctldPidFile=%s", path("slurmctld.pid")),
    sprintf("SlurmdPidFile=%s", path("slurmd.pid")),
    sprintf("SlurmctldLogFile=%s", path("slurmctld.log")),
    sprintf("SlurmdLogFile=%s", path("slurmd.log")),
    sprintf("PlugStackConfig=%s", path("plugstack.conf")),
    "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
    "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
    "SlurmdParameters=config_overrides", "MpiDefault=none",
    "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
    "ReturnToService=2", "SchedulerParameters=sched_interval=1",
    sprintf("NodeName=%s NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN", node),
    sprintf("PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP", node)),
    path("slurm.conf"))
  file.create(path("plugstack.conf"))
  Sys.setenv(SLURM_CONF = path("slurm.conf"))
  daemon <- function(name)
    processx::process$new(slurm_program(name), c("-D", "-f", path("slurm.conf")),
                          stdout = path(paste0(name, ".out")), stderr = "2>&1", cleanup = TRUE)
  cluster <- list(dir = dir, munge = munge, conf = path("slurm.conf"))
  cluster$ctld <- daemon("slurmctld")
  cluster$slurmd <- daemon("slurmd")
  deadline <- Sys.time() + timeout
  repeat {
    out <- processx::run(slurm_program("sinfo"), c("-h", "-o", "%t"), error_on_status = FALSE,
                         timeout = 10)
    if (out$status == 0 && any(trimws(out$stdout) %in% c("idle", "mix", "alloc"))) break
    alive <- c(munged = munge$is_alive(), slurmctld = cluster$ctld$is_alive(),
               slurmd = cluster$slurmd$is_alive())
    if (!all(alive) || Sys.time() > deadline) {
      logs <- Sys.glob(path(c("*.log", "*.out")))
      text <- unlist(lapply(logs, function(f) c(paste("--", basename(f)), utils::tail(readLines(f, warn = FALSE), 8))))
      try(slurm_stop(cluster), silent = TRUE)
      stop(sprintf("the node was not idle within %d s (%s). Logs:\n%s", timeout,
                   paste(names(alive), ifelse(alive, "running", "exited"), collapse = ", "),
                   paste(text, collapse = "\n")), call. = FALSE)
    }
    Sys.sleep(0.2)
  }
  cluster
}

slurm_stop <- function(cluster) {
  if (is.null(cluster)) return(invisible())
  for (p in list(cluster$slurmd, cluster$ctld, cluster$munge)) {
    if (!p$is_alive()) next
    p$signal(tools::SIGTERM)
    p$wait(5000)
    if (p$is_alive()) p$kill()
  }
  Sys.unsetenv("SLURM_CONF")
  unlink(cluster$dir, recursive = TRUE)
  invisible()
}

# The jobs Slurm knows of (pending or running) whose names start with
# `prefix`: a data frame of id, name and state.
slurm_jobs <- function(prefix = "bgpool-") {
  out <- processx::run(slurm_program("squeue"), c("-h", "-o", "%i %j %T"), timeout = 10)$stdout
  lines <- strsplit(trimws(out), "\n", fixed = TRUE)[[1L]]
  lines <- lines[nzchar(lines)]
  fields <- do.call(rbind, strsplit(lines, " ", fixed = TRUE))
  if (is.null(fields)) fields <- matrix(character(), 0L, 3L)
  jobs <- data.frame(id = fields[, 1], name = fields[, 2], state = fields[, 3],
                     stringsAsFactors = FALSE)
  jobs <- jobs[startsWith(jobs$name, prefix), , drop = FALSE]
  jobs[order(jobs$name), , drop = FALSE]
}

# Workers in jobs of the test cluster, with bgpool from this session's
# library; the pool's directory in this session's temporary directory.
test_slurm_workers <- function(jobs = 2L, per_job = 2L) {
  slurm_workers(jobs, per_job, rscript = file.path(R.home("bin"), "Rscript"),
                rscript_envs = c(R_LIBS = paste(.libPaths(), collapse = ":")),
                master = "127.0.0.1", dir = file.path(tempdir(), "slurm-pools"))
}
