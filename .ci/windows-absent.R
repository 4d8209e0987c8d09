# Writes src/windows/absent.cpp: for each routine that src/RcppExports.cpp
# declares and no source built by src/Makevars.win defines, a definition
# that raises an error (the R code never calls them on Windows; they exist
# for the DLL to link). With --check, only says whether the file is current.
# Run by `make document`; .ci/run checks it.
args <- commandArgs(TRUE)
exports <- readLines("src/RcppExports.cpp")
declared <- grep("^[A-Za-z][A-Za-z0-9_:<>, *&]* [A-Za-z_][A-Za-z0-9_]*\\(.*\\);$", exports, value = TRUE)
declared <- declared[!grepl("Rcpp::R[co]", declared)]
name_of <- function(decl) sub("^[^(]*[ *&]([A-Za-z_][A-Za-z0-9_]*)\\(.*$", "\\1", decl)

makevars <- paste(readLines("src/Makevars.win"), collapse = "\n")
objects <- strsplit(trimws(sub("(?s).*OBJECTS *= *", "", makevars, perl = TRUE)), "[[:space:]\\\\]+")[[1L]]
sources <- setdiff(file.path("src", sub("\\.o$", ".cpp", objects)),
                   c("src/RcppExports.cpp", "src/windows/absent.cpp"))
built <- unlist(lapply(sources, readLines))
defined <- function(name)
  any(grepl(sprintf("^[A-Za-z].*[ *&]%s\\(.*[^;]$", name), built))

absent <- declared[!vapply(name_of(declared), defined, NA)]
body <- vapply(absent, function(decl) {
  if (grepl("DllInfo", decl, fixed = TRUE)) return(sub(";$", " {}", decl))  # an init hook
  sub(";$", " { absent(); }", decl)
}, "")
text <- c(
  "// Written by .ci/windows-absent.R from RcppExports.cpp; do not edit by hand.",
  "// The routines of the native core, which Windows does not build: R's code",
  "// never calls them there (the \"psock\" backend runs the pool).",
  "#include <Rcpp.h>",
  "",
  "namespace {",
  "[[noreturn]] void absent() {",
  "  Rcpp::stop(\"bgpool: the native core is not built on this platform; this is a bug in bgpool\");",
  "}",
  "}  // namespace",
  "",
  unname(body))
target <- "src/windows/absent.cpp"
if ("--check" %in% args) {
  if (!file.exists(target) || !identical(readLines(target), text)) {
    message(target, " is out of date: run `make document`")
    quit(status = 1)
  }
} else writeLines(text, target)
