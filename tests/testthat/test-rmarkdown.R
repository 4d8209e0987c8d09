# A knitted document that uses the pool: tests/fixtures/report.Rmd is
# rendered with rmarkdown::render() in a separate R process (callr), in an
# environment of its own, so that this session and its pool are untouched.
# The document creates a pool, exports, applies, maps, runs tasks that print,
# collects the workers' pids and deletes the pool; each chunk prints one
# tagged line that is checked here.

skip_without_rmarkdown <- function() {
  skip_if_not_installed("rmarkdown")
  skip_if_not_installed("knitr")
  skip_if_not_installed("callr")
  if (!rmarkdown::pandoc_available())
    skip("pandoc is not installed (rmarkdown::pandoc_available() is FALSE): rmarkdown::render() needs it; `make deps` installs it")
}

# Renders `input` to Markdown in `dir`, in a new R process with this
# session's library paths. Returns the document's lines, the rendering
# process's console output, its pid, whether a pool still existed after
# rendering and the processes it still had as children (pid and state).
render_in_child <- function(input, dir) {
  console <- file.path(dir, "console.txt")
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  result <- callr::r(
    function(input, dir) {
      output <- rmarkdown::render(
        input, output_format = rmarkdown::md_document(), output_dir = dir,
        intermediates_dir = dir, knit_root_dir = dir,
        envir = new.env(parent = globalenv()), quiet = TRUE)
      # this process's children, zombies included, from /proc/<pid>/stat
      children <- list()
      for (stat in Sys.glob("/proc/[0-9]*/stat")) {
        line <- tryCatch(suppressWarnings(readLines(stat, n = 1L, warn = FALSE)),
                         error = function(e) character())
        if (!length(line)) next
        fields <- strsplit(sub("^.*\\)\\s*", "", line), " ", fixed = TRUE)[[1L]]
        if (as.integer(fields[2L]) == Sys.getpid())
          children[[length(children) + 1L]] <- paste(sub(" .*$", "", line), fields[1L])
      }
      list(document = readLines(output), pid = Sys.getpid(),
           pool_exists = bgpool::pool_exists(), children = unlist(children))
    },
    args = list(input = input, dir = dir),
    libpath = .libPaths(),
    env = c(callr::rcmd_safe_env(), R_LIBS = libs),
    stdout = console, stderr = "2>&1",
    timeout = 120
  )
  result$console <- if (file.exists(console)) readLines(console, warn = FALSE) else character()
  result
}

# The numbers on the document's line tagged `tag` (e.g. "SAPPLY:").
tagged <- function(document, tag) {
  line <- grep(paste0("^\\s*(## )?", tag, " "), document, value = TRUE)
  expect_length(line, 1L)
  words <- strsplit(trimws(sub(paste0("^.*", tag), "", line[1L])), " +")[[1L]]
  words
}

test_that("a pool used in a knitted document gives its results there, and nothing else", {
  skip_without_rmarkdown()
  dir <- withr::local_tempdir("bgpool-rmd-")
  input <- file.path(dir, "report.Rmd")
  expect_true(file.copy(test_path("..", "fixtures", "report.Rmd"), input))

  result <- render_in_child(input, dir)
  doc <- result$document
  text <- paste(doc, collapse = "\n")
  context <- paste(c("The rendered document:", doc, "", "The console:", result$console),
                   collapse = "\n")

  # the right results, chunk by chunk
  expect_identical(tagged(doc, "SAPPLY:"), as.character(43:52), info = context)
  expect_identical(tagged(doc, "MAP:"), c("10", "40", "90"), info = context)
  expect_identical(tagged(doc, "LAPPLY:"), c("1", "4", "9", "16"), info = context)
  expect_identical(tagged(doc, "SLOW:"), as.character(1:6 * 100), info = context)
  expect_identical(tagged(doc, "EXISTS:"), "FALSE", info = context)

  # What the workers printed (cat, message, print) is in their logs, and
  # never in the document nor on the rendering process's console.
  expect_identical(tagged(doc, "LOGGED:"), "TRUE", info = context)
  expect_false(grepl("LEAK-", text, fixed = TRUE), info = context)
  expect_false(any(grepl("LEAK-", result$console, fixed = TRUE)), info = context)
  # a task's warning is signalled in the master, so knitr shows it
  expect_match(text, "Warning[^\n]*relayed warning", info = context)

  # init_pool() says "Creating background pool" as a message, which knitr
  # shows (once, in the chunk that created the pool); delete_pool()'s
  # message is in a chunk with message = FALSE and is not shown.
  expect_length(grep("Creating background pool", doc, fixed = TRUE), 1L)
  expect_match(text, "init_pool\\(2\\)\\s*## Creating background pool", perl = TRUE,
               info = context)
  expect_false(grepl("Deleting background pool", text, fixed = TRUE), info = context)
  expect_false(grepl("bgpool_", text, fixed = TRUE), info = context)

  # no progress bar in a knitted document
  expect_false(grepl("ETA|\u25a0|[0-9]+%|\r", text), info = context)

  # The pool was deleted by the document: none left in the rendering
  # process, which had no child process left, and the workers are gone.
  expect_false(result$pool_exists)
  expect_length(result$children, 0L)
  workers <- as.integer(tagged(doc, "WORKERS:"))
  expect_length(workers, 2L)
  expect_identical(as.integer(tagged(doc, "MASTER:")), result$pid)
  expect_false(any(workers %in% c(Sys.getpid(), result$pid)))
  expect_true(wait_pids_gone(workers, timeout = 5), info = paste("workers", toString(workers)))
})
