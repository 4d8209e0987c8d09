# Benchmark: uploading and downloading one set of files of mixed sizes to a
# real Azure Storage server (Azurite, the emulator, on 127.0.0.1) with
# AzureStor, done sequentially in this process, through AzureRMR's pool (when
# AzureRMR is installed) and through bgpool's; printed as one table. Every
# download is checked against the originals (MD5). Not a test: numbers vary
# with the machine.
#
# Needs AzureStor and Azurite: `bash .ci/azure-deps.sh` installs both. From
# the project's root, after `make install`:
#   R_LIBS=.lib Rscript inst/bench/azure_transfer.R [--files 200] [--workers 2] [--reps 3]
# BGPOOL_AZURITE_DIR may point to another folder with Azurite's node_modules.

opts <- list(files = 200L, workers = 2L, reps = 3L, max_mb = 5)
args <- commandArgs(trailingOnly = TRUE)
usage <- "usage: azure_transfer.R [--files N] [--workers N] [--reps N] [--max_mb MB]"
if (length(args) %% 2) stop(usage, call. = FALSE)
for (i in seq_len(length(args) / 2) * 2 - 1) {
  key <- sub("^--", "", args[i])
  if (!key %in% names(opts)) stop(usage, call. = FALSE)
  opts[[key]] <- as.numeric(args[i + 1])
}
for (p in c("AzureStor", "bgpool", "processx"))
  if (!requireNamespace(p, quietly = TRUE))
    stop(p, " is not installed: run `make install` and `bash .ci/azure-deps.sh`", call. = FALSE)
have_azurermr <- requireNamespace("AzureRMR", quietly = TRUE)

upload <- function(cont, src, dest) AzureStor::storage_upload(cont, src, dest)
download <- function(cont, src, dest) AzureStor::storage_download(cont, src, dest)

main <- function() {
  # -- Azurite, stopped by its pid when main() ends (also on error) -----------
  azurite_dir <- Sys.getenv("BGPOOL_AZURITE_DIR", file.path("tests", "azurite"))
  bin <- file.path(azurite_dir, "node_modules", ".bin", "azurite-blob")
  if (!file.exists(bin))
    stop("Azurite is not installed in ", azurite_dir, ": run `bash .ci/azure-deps.sh`", call. = FALSE)
  bin <- normalizePath(bin)
  work <- tempfile("azure-bench-")
  dir.create(work)
  log <- file.path(work, "azurite.log")
  azurite <- processx::process$new(
    bin, c("--inMemoryPersistence", "--extentMemoryLimit", "2048", "--blobHost", "127.0.0.1",
           "--blobPort", "0", "--disableTelemetry", "--silent"),
    wd = work, stdout = log, stderr = "2>&1", cleanup = TRUE, cleanup_tree = TRUE, supervise = TRUE)
  pid <- azurite$get_pid()
  on.exit({
    suppressMessages(bgpool::delete_pool())
    if (have_azurermr) suppressMessages(AzureRMR::delete_pool())
    tools::pskill(pid, tools::SIGTERM)
    azurite$wait(5000)
    if (azurite$is_alive()) tools::pskill(pid, tools::SIGKILL)
    unlink(work, recursive = TRUE)
  }, add = TRUE)
  port <- NA_integer_
  deadline <- Sys.time() + 30
  while (is.na(port)) {
    lines <- if (file.exists(log)) readLines(log, warn = FALSE) else character()
    hit <- regmatches(lines, regexpr("listens on http://127\\.0\\.0\\.1:[0-9]+", lines))
    if (length(hit)) port <- as.integer(sub(".*:", "", hit[1]))
    else if (!azurite$is_alive() || Sys.time() > deadline)
      stop("Azurite did not start:\n", paste(lines, collapse = "\n"), call. = FALSE)
    else Sys.sleep(0.05)
  }
  key <- paste0("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/",
                "K1SZFPTOtr/KBHBeksoGMGw==")  # Azurite's public development key
  endpoint <- AzureStor::storage_endpoint(sprintf("http://127.0.0.1:%d/devstoreaccount1", port),
                                          key = key, service = "blob")

  # -- the file set --------------------------------------------------------------
  set.seed(1)
  n <- opts$files
  sizes <- round(exp(runif(n, log(1024), log(opts$max_mb * 1024^2))))
  sizes[1:2] <- c(1024, opts$max_mb * 1024^2)
  src_dir <- file.path(work, "src")
  rel <- file.path(sprintf("part%02d", seq_len(n) %% 7), sprintf("file-%03d.bin", seq_len(n)))
  src <- file.path(src_dir, rel)
  for (d in unique(dirname(src))) dir.create(d, recursive = TRUE)
  for (i in seq_len(n)) writeBin(as.raw(sample.int(256L, sizes[i], TRUE) - 1L), src[i])
  src_md5 <- unname(tools::md5sum(src))
  total_mb <- sum(sizes) / 1024^2
  cat(sprintf("%d files, %.1f MB in all (%.0f KB to %.0f MB), %d workers, %d runs each (median), AzureStor %s, Azurite on 127.0.0.1:%d\n",
              n, total_mb, min(sizes) / 1024, max(sizes) / 1024^2, opts$workers, opts$reps,
              format(packageVersion("AzureStor")), port))

  # -- the ways to transfer -------------------------------------------------------
  # each takes the container, sources and destinations, and runs them all
  sequential <- function(cont, from, to, transfer)
    for (i in seq_along(from)) transfer(cont, from[i], to[i])
  on_pool <- function(pkg) {
    init <- getExportedValue(pkg, "init_pool")
    export <- getExportedValue(pkg, "pool_export")
    map <- getExportedValue(pkg, "pool_map")
    list(start = function() {
           suppressMessages(getExportedValue(pkg, "delete_pool")())
           suppressMessages(init(opts$workers))
         },
         run = function(cont, from, to, transfer) {
           export("cont", envir = environment())
           # the task carries the container and the transfer, nothing else
           task <- function(src, dest) transfer(cont, src, dest)
           environment(task) <- list2env(list(cont = cont, transfer = transfer), parent = globalenv())
           map(task, src = from, dest = to)
         })
  }
  ways <- list(sequential = list(start = function() NULL, run = sequential))
  if (have_azurermr) ways[[sprintf("AzureRMR %s pool", packageVersion("AzureRMR"))]] <- on_pool("AzureRMR")
  ways[[sprintf("bgpool %s pool", packageVersion("bgpool"))]] <- on_pool("bgpool")

  elapsed <- function(expr) unname(system.time(expr)[["elapsed"]])

  started <- vapply(ways, function(w) elapsed(w$start()), 0)
  started[["sequential"]] <- NA
  times <- lapply(ways, function(w) list(up = numeric(), down = numeric(), ok = TRUE))
  run <- 0
  for (rep in seq_len(opts$reps)) {
    for (way in names(ways)) {   # interleaved, so that drift hits all alike
      run <- run + 1
      cont <- AzureStor::create_blob_container(endpoint, sprintf("bench-%03d", run))
      dest <- file.path("b", rel)
      up <- elapsed(ways[[way]]$run(cont, src, dest, upload))
      back <- file.path(work, sprintf("back-%03d", run), sprintf("%03d.bin", seq_len(n)))
      dir.create(dirname(back[1]))
      down <- elapsed(ways[[way]]$run(cont, dest, back, download))
      blobs <- AzureStor::list_blobs(cont)
      ok <- nrow(blobs) == n && identical(unname(tools::md5sum(back)), src_md5)
      times[[way]]$up <- c(times[[way]]$up, up)
      times[[way]]$down <- c(times[[way]]$down, down)
      times[[way]]$ok <- times[[way]]$ok && ok
      AzureStor::delete_blob_container(cont, confirm = FALSE)
      unlink(dirname(back[1]), recursive = TRUE)
    }
  }

  table <- data.frame(
    way = names(ways),
    `pool start s` = round(started, 2),
    `upload s` = round(vapply(times, function(t) median(t$up), 0), 2),
    `upload MB/s` = round(total_mb / vapply(times, function(t) median(t$up), 0), 1),
    `download s` = round(vapply(times, function(t) median(t$down), 0), 2),
    `download MB/s` = round(total_mb / vapply(times, function(t) median(t$down), 0), 1),
    `all MD5 match` = vapply(times, function(t) t$ok, NA),
    check.names = FALSE, row.names = NULL)
  seq_up <- table$`upload s`[1]
  seq_down <- table$`download s`[1]
  table$`speed-up (up/down)` <- sprintf("%.2fx / %.2fx", seq_up / table$`upload s`,
                                         seq_down / table$`download s`)
  old <- options(width = max(getOption("width"), 160))
  on.exit(options(old), add = TRUE)
  print(table, row.names = FALSE)
  if (!have_azurermr) cat("(AzureRMR is not installed: no row for its pool)\n")
  if (!all(table$`all MD5 match`)) stop("some transfers did not come back intact", call. = FALSE)
  invisible(table)
}
main()
