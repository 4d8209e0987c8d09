# Workers in Slurm jobs. Each job is a host: `sbatch --wait` submits it
# and stays while it runs (the local process the pool watches, as ssh is
# for an SSH host); the job's template forks its workers, and all connect
# back to the master over TCP, each answering the master's challenge with
# the pool's token. The token is read from a file only the user can read,
# in a directory the jobs see (on a cluster, a shared file system): it is
# in no job description and never crosses the network.

#' Workers in Slurm jobs
#'
#' Describes workers that [init_pool()] starts as Slurm batch jobs:
#' `init_pool(remote = slurm_workers(jobs = 4, per_job = 8, partition =
#' "short", time = "1:00:00"))` submits 4 jobs with `sbatch`, each of
#' which runs 8 workers on its node. Every worker connects back to the
#' master over TCP and proves itself with the pool's secret by
#' challenge-response (the secret itself never crosses the network); the
#' master listens only while workers start, and drops any peer that does
#' not answer.
#'
#' The nodes need R with bgpool installed and must reach `master` over
#' TCP; the pool's directory (`dir`) must be visible to them (a shared
#' file system, as home directories usually are). `init_pool()` waits
#' until every job runs and its workers connect (at most `setup_timeout`
#' seconds, default 60: raise it where jobs queue). Remote workers work as
#' local ones do with every `pool_*()` function; an export reaches each job
#' once, and its workers map the job's copy. A
#' job that ends (`scancel`, its time limit) gives the same error as a
#' lost local worker, naming the job; the next call submits a new one.
#' `delete_pool()` ends the jobs and cancels any still queued; a job whose
#' master dies ends with its connection.
#'
#' @param jobs How many jobs (hosts) to submit.
#' @param per_job How many workers each job runs; each job asks for as
#'   many CPUs (`--cpus-per-task`) unless `sbatch_options` say otherwise.
#' @param partition,time,memory,account `sbatch`'s `--partition`,
#'   `--time`, `--mem` and `--account`, or `NULL` for the cluster's default.
#' @param sbatch_options Further options for `sbatch`, such as
#'   `"--qos=normal"` or `"--constraint=avx2"`; they come after bgpool's.
#' @param rscript The Rscript program on the nodes.
#' @param rscript_args Further arguments for it there.
#' @param rscript_envs Environment variables for the workers there, such
#'   as `c(R_LIBS = "/opt/R/library")` (the jobs also get the master's
#'   environment, as `sbatch` passes it by default).
#' @param master The address of this machine that the nodes connect to
#'   (default: its host name).
#' @param dir Where the pool keeps the secret's file and the jobs' logs
#'   (in a directory of its own, removed with the pool).
#' @param sbatch,scancel The Slurm commands here.
#' @return An object of class `bgpool_slurm_workers`, for `init_pool(remote
#'   = )`.
#' @examples
#' \dontrun{
#' init_pool(remote = slurm_workers(jobs = 2, per_job = 4, partition = "short",
#'                                  time = "30:00", memory = "8G"))
#' pool_sapply(1:100, function(i) Sys.info()[["nodename"]])
#' delete_pool()
#' }
#' @export
slurm_workers <- function(jobs = 1L, per_job = 1L, partition = NULL, time = NULL,
                          memory = NULL, account = NULL, sbatch_options = character(),
                          rscript = "Rscript", rscript_args = character(),
                          rscript_envs = character(), master = Sys.info()[["nodename"]],
                          dir = tools::R_user_dir("bgpool", "cache"), sbatch = "sbatch",
                          scancel = "scancel") {
  fail <- function(what) abort(sprintf("slurm_workers(): %s", what), "bgpool_bad_argument")
  whole <- function(x) is.numeric(x) && length(x) == 1L && !is.na(x) && x >= 1 && x == round(x) && is.finite(x)
  if (!whole(jobs)) fail("`jobs` must be a whole number of jobs, 1 or more")
  if (!whole(per_job)) fail("`per_job` must be a whole number of workers, 1 or more")
  given <- Filter(Negate(is.null), list(partition = partition, time = time, memory = memory,
                                         account = account))
  check_launcher(fail, c(list(rscript = rscript, master = master, dir = dir, sbatch = sbatch,
                              scancel = scancel), given),
                 list(sbatch_options = sbatch_options, rscript_args = rscript_args), rscript_envs)
  advice <- "run this where Slurm's commands are installed, or give their paths"
  sbatch <- program_path(sbatch, fail, advice)
  scancel <- program_path(scancel, fail, advice)
  jobs <- as.integer(jobs)
  structure(list(hosts = sprintf("job %d", seq_len(jobs)), per_host = rep(as.integer(per_job), jobs),
                 partition = partition, time = time, memory = memory, account = account,
                 sbatch_options = sbatch_options, rscript = rscript, rscript_args = rscript_args,
                 rscript_envs = rscript_envs, master = master, dir = dir, sbatch = sbatch,
                 scancel = scancel),
            class = "bgpool_slurm_workers")
}

#' @export
print.bgpool_slurm_workers <- function(x, ...) {
  cat(sprintf("<bgpool slurm_workers: %d job(s) of %d worker(s)%s>\n", length(x$hosts),
              x$per_host[1L], if (is.null(x$partition)) "" else paste(" in", x$partition)))
  invisible(x)
}

# sbatch's options for one job named `job`, its output appended to `log`.
slurm_options <- function(remote, job, log) {
  given <- function(option, value) if (!is.null(value)) paste0(option, value)
  c("--parsable", "--wait", "--export=ALL", paste0("--job-name=", job),
    paste0("--output=", log), "--open-mode=append", "--ntasks=1",
    paste0("--cpus-per-task=", remote$per_host[1L]),
    given("--partition=", remote$partition), given("--time=", remote$time),
    given("--mem=", remote$memory), given("--account=", remote$account),
    remote$sbatch_options)
}

# What a pool's remote workers need before they start: for Slurm, a
# directory of its own (mode 0700) for the token's file and the logs, and
# a job name per host.
start_remote <- function(remote) {
  if (!inherits(remote, "bgpool_slurm_workers")) return(list(remote = remote))
  dir.create(remote$dir, recursive = TRUE, showWarnings = FALSE, mode = "0700")
  name <- paste0("bgpool-", substr(pool_random_name(), 1L, 12L))
  dir <- file.path(normalizePath(remote$dir), name)
  if (!dir.create(dir, mode = "0700"))
    abort(sprintf("init_pool(): cannot create %s for the Slurm jobs' files; give slurm_workers() a `dir` you can write to",
                  dir), "bgpool_start_failed")
  list(remote = remote, dir = dir, token = file.path(dir, "token"),
       jobs = sprintf("%s-%d", name, seq_along(remote$hosts)))
}

# After the pool stopped: cancels the jobs still queued or running (a job
# that ended already is no error), waits (at most `patience` seconds) until
# Slurm has let them go, and removes their directory.
stop_remote <- function(started, patience = 10) {
  if (is.null(started$jobs)) return(invisible())
  remote <- started$remote
  squeue <- file.path(dirname(remote$scancel), "squeue")
  queued <- function() {
    ids <- suppressWarnings(system2(
      squeue, c("--noheader", "--format=%i", paste0("--name=", paste(started$jobs, collapse = ",")),
                paste0("--user=", Sys.info()[["effective_user"]])), stdout = TRUE, stderr = FALSE))
    if (is.null(attr(ids, "status"))) trimws(ids) else character()
  }
  ids <- queued()
  if (length(ids))
    suppressWarnings(system2(remote$scancel, c("--quiet", ids), stdout = FALSE, stderr = FALSE))
  deadline <- Sys.time() + patience
  while (length(ids) && Sys.time() < deadline) {
    Sys.sleep(0.1)
    ids <- queued()
  }
  unlink(started$dir, recursive = TRUE)
  invisible()
}
