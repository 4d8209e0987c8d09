# A pool runs on one of two backends, chosen when it is created:
#   "native"  the C++ core (src/): Linux and macOS.
#   "psock"   parallel's socket cluster, as AzureRMR's pool is
#             (R/backend-psock.R): Windows, where the native core is not
#             built, and elsewhere with options(bgpool.backend = "psock").
# A backend is a list of the same operations on a pool's handle; R/run.R
# says what run_elements() and run_on_workers() return. `.bgpool$backend`
# holds the pool's. Two things differ: whether a pool_*() call waits for
# calls sent through the pool's cluster (`waits_for_cluster`; else it
# refuses to run while any is uncollected), and whether large vectors go
# through shared memory (`shares_memory`).

choose_backend <- function() {
  windows <- .Platform$OS.type == "windows"
  choice <- getOption("bgpool.backend", Sys.getenv("BGPOOL_BACKEND", if (windows) "psock" else "native"))
  if (!is.character(choice) || length(choice) != 1L || !choice %in% c("native", "psock"))
    abort(sprintf("init_pool(): options(bgpool.backend) must be \"native\" or \"psock\", not %s",
                  deparse1(choice, nlines = 1L)), "bgpool_bad_argument")
  if (choice == "native" && windows)
    abort("init_pool(): the native backend is not built on Windows; set options(bgpool.backend = \"psock\") or leave it unset",
          "bgpool_bad_argument")
  if (choice == "native") native_backend else psock_backend
}

native_backend <- list(
  name = "native",
  create = function(size, options, started) {
    remote <- started$remote
    total <- size + remote_size(remote)
    hosts <- host_commands(size, template_command(options), started, total, options)
    pool_create(hosts, options$setup_timeout, tempdir(), total, options$outfile,
                if (is.null(started$token)) "" else remote$master,
                if (is.null(started$token)) "" else started$token)
  },
  stop = function(handle) pool_stop(handle),
  owned = function(handle) pool_owned(handle),
  state = function(handle) pool_state(handle),
  prepare = function(handle, drain_cluster) {
    pool_prepare(handle, drain_cluster, getOption("bgpool.cancel_grace", 1),
                 getOption("bgpool.log_limit", 1e7), getOption("bgpool.share_threshold", 1e6))
  },
  replace = function(handle, slots) pool_replace(handle, slots),
  kill = function(handle, slots) pool_kill_workers(handle, slots),
  # (handle, job, inputs, is_map, n, chunk_size, timeout, retry, attempts, progress)
  run_elements = function(...) pool_run_elements(...),
  run_on_workers = function(handle, fun, args, slots) pool_run_on_workers(handle, fun, args, slots),
  cluster = function(handle) {
    # future keeps its books per cluster "name" (else a hash of the nodes)
    structure(lapply(seq_len(pool_size()), new_node, handle = handle),
              class = c("bgpool_cluster", "cluster"), name = basename(pool_state(handle)$dir))
  },
  cluster_busy = function(handle) pool_node_busy(handle),
  waits_for_cluster = TRUE,
  shares_memory = TRUE
)

# How the native backend starts its template: as Rscript would, with R's
# default packages (methods unless `methods = FALSE`) and the master's
# library paths (workers inherit the environment, not paths set at run
# time). With the default Rscript, R's own binary is run straight away:
# Rscript runs R's shell front end, which spends a quarter of R's start-up
# setting variables that this session, started by it, already holds.
template_command <- function(options) {
  packages <- paste(c("datasets", "utils", "grDevices", "graphics", "stats",
                      if (options$methods) "methods"), collapse = ",")
  env <- c(paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)),
           options$rscript_envs)
  expr <- c("-e", "bgpool:::template_main()")
  binary <- paste0(R.home("bin"), "/exec", Sys.getenv("R_ARCH"), "/R")
  front_end_set <- all(nzchar(Sys.getenv(c("R_HOME", "R_SHARE_DIR", "R_INCLUDE_DIR", "R_DOC_DIR"))))
  rscript_only <- any(grepl("^--(verbose|default-packages)", options$rscript_args))
  if (options$rscript == default_rscript() && front_end_set && !rscript_only &&
        utils::file_test("-x", binary))
    list(program = binary, args = c("--no-echo", "--no-restore", options$rscript_args, expr),
         env = c(env, paste0("R_DEFAULT_PACKAGES=", packages)))
  else list(program = options$rscript,
            args = c(paste0("--default-packages=", packages), options$rscript_args, expr),
            env = env)
}
