# Installs the R packages that building, testing, the vignette and the demo
# need, when missing: Debian's prebuilt r-cran-* packages where apt is
# available and we are root (seconds), otherwise from R's configured
# repositories. (pandoc and qpdf come from .ci/tools.sh.)
# Usage: Rscript .ci/deps.R [package ...]
wanted <- commandArgs(trailingOnly = TRUE)
if (!length(wanted))
  wanted <- c("Rcpp", "testthat", "withr", "R6", "callr", "processx",
              "cli", "foreach", "doParallel", "future", "knitr", "rmarkdown")
missing <- function() wanted[!vapply(wanted, requireNamespace, NA, quietly = TRUE)]

todo <- missing()
if (length(todo) && nzchar(Sys.which("apt-get")) && identical(Sys.info()[["effective_user"]], "root")) {
  message("Installing from Debian: ", paste(todo, collapse = ", "))
  debs <- paste0("r-cran-", tolower(todo))
  system2("apt-get", c("update", "-qq"), stdout = FALSE)
  # one at a time, so that a name Debian lacks does not stop the others
  for (deb in debs)
    system2("apt-get", c("install", "-y", "-qq", "--no-install-recommends", deb),
            stdout = FALSE, stderr = FALSE, env = "DEBIAN_FRONTEND=noninteractive")
  todo <- missing()
}
if (length(todo)) {
  message("Installing from CRAN: ", paste(todo, collapse = ", "))
  lib <- .libPaths()[file.access(.libPaths(), 2) == 0][1]
  if (is.na(lib)) {
    lib <- Sys.getenv("R_LIBS_USER")
    dir.create(lib, recursive = TRUE, showWarnings = FALSE)
  }
  install.packages(todo, lib = lib, Ncpus = 2)
  todo <- missing()
}
if (length(todo)) stop("could not install: ", paste(todo, collapse = ", "))
