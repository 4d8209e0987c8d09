#!/usr/bin/env bash
# Installs, when missing, what the Azure Storage tests (tests/testthat/
# test-azure-*.R) and inst/bench/azure_transfer.R need, on a fresh Debian
# machine; a second run installs nothing and takes a few seconds.
#   - Debian packages: Node.js and npm (to run Azurite), and the headers
#     that building AzureStor's dependencies from source needs;
#   - AzureStor and its R dependencies: Debian's r-cran-* packages where they
#     exist, then install.packages() from R's configured repositories for the
#     rest (AzureStor, AzureRMR, AzureAuth, AzureGraph, jose), into a library
#     that is writable;
#   - Azurite, the Azure Storage emulator, pinned in tests/azurite/
#     package.json and package-lock.json: `npm ci` into
#     tests/azurite/node_modules (git-ignored).
# Without root or apt the Debian step is skipped (with a note): what is
# already there is used, and the R step installs from R's repositories.
# Usage: bash .ci/azure-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "azure-deps: $*"; }

# -- Debian packages -----------------------------------------------------
can_apt=
if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then can_apt=1; fi
apt_updated=
apt_update_once() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq > /dev/null
    apt_updated=1
  fi
}
# (no `grep -q` on a pipe: with pipefail, the writer's SIGPIPE would count)
installed_deb() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2> /dev/null)" == *"install ok installed"* ]]; }
has_candidate() { [[ "$(apt-cache policy "$1" 2> /dev/null)" =~ Candidate:\ [^\(] ]]; }
# apt_install PKG...: installs those of PKG that are not installed (and that
# Debian has); one apt-get call for all of them.
apt_install() {
  local want=() p
  for p in "$@"; do installed_deb "$p" || want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  if [ -z "$can_apt" ]; then
    say "not root or no apt-get: not installing ${want[*]}"
    return 0
  fi
  apt_update_once
  local have=()
  for p in "${want[@]}"; do
    if has_candidate "$p"; then have+=("$p"); else say "Debian has no package $p"; fi
  done
  [ ${#have[@]} -eq 0 ] && return 0
  say "installing from Debian: ${have[*]}"
  local out
  if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
               "${have[@]}" 2>&1); then
    printf '%s\n' "$out" >&2
    say "apt-get install failed"
    return 1
  fi
}

# Node.js and npm. Node.js from another source may already bring npm, and
# Debian's npm would conflict with it: install each only when its command
# is missing.
debs=()
command -v node > /dev/null || debs+=(nodejs)
command -v npm > /dev/null || debs+=(npm)
# Headers for building curl, openssl and xml2 (R packages) from source. Keep
# another flavour of libcurl's headers when one is installed (they conflict).
if ! installed_deb libcurl4-gnutls-dev && ! installed_deb libcurl4-nss-dev; then
  debs+=(libcurl4-openssl-dev)
fi
debs+=(libssl-dev libxml2-dev pkg-config)
apt_install "${debs[@]}"

# -- R packages ----------------------------------------------------------
# AzureStor's dependencies that Debian has prebuilt, and those the tests use.
r_debian=(httr xml2 openssl curl jsonlite mime R6 uuid vctrs rappdirs askpass sys
          cli glue lifecycle rlang processx withr testthat)
# Not in Debian: from R's configured repositories.
r_repos=(jose AzureAuth AzureGraph AzureRMR AzureStor)

r_missing() {
  Rscript -e 'p <- commandArgs(TRUE)
    writeLines(p[!vapply(p, requireNamespace, NA, quietly = TRUE)])' "$@"
}
mapfile -t missing < <(r_missing "${r_debian[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  debs=()
  for p in "${missing[@]}"; do debs+=("r-cran-${p,,}"); done
  apt_install "${debs[@]}"
fi
mapfile -t missing < <(r_missing "${r_debian[@]}" "${r_repos[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  say "installing with install.packages(): ${missing[*]}"
  # The first writable library on the default path that is not the
  # project's build library (.lib), else the user library (created).
  Rscript -e '
    todo <- commandArgs(TRUE)
    project <- normalizePath(".lib", mustWork = FALSE)
    libs <- .libPaths()
    libs <- libs[file.access(libs, 2) == 0 & normalizePath(libs, mustWork = FALSE) != project]
    lib <- if (length(libs)) libs[1] else {
      user <- Sys.getenv("R_LIBS_USER")
      dir.create(user, recursive = TRUE, showWarnings = FALSE)
      .libPaths(c(user, .libPaths()))
      user
    }
    message("azure-deps: into ", lib)
    install.packages(todo, lib = lib, Ncpus = 2, quiet = TRUE)
    left <- todo[!vapply(todo, requireNamespace, NA, quietly = TRUE)]
    if (length(left)) stop("could not install: ", paste(left, collapse = ", "))
  ' "${missing[@]}"
fi

# -- Azurite -------------------------------------------------------------
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  say "node or npm is missing and could not be installed: the Azure tests will be skipped"
  exit 0
fi
azurite=tests/azurite
pinned=$(node -p 'require("./'"$azurite"'/package.json").dependencies.azurite')
have=$(node -p 'try { require("./'"$azurite"'/node_modules/azurite/package.json").version } catch (e) { "" }')
# node_modules/.package-lock.json is npm's record of what it installed: it
# must be newer than the lock file for the install to be current.
if [ "$have" != "$pinned" ] || [ ! -x "$azurite/node_modules/.bin/azurite-blob" ] ||
   [ "$azurite/package-lock.json" -nt "$azurite/node_modules/.package-lock.json" ]; then
  say "npm ci: Azurite $pinned into $azurite/node_modules"
  (cd "$azurite" && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
fi
say "ready: node $(node --version), Azurite $("$azurite/node_modules/.bin/azurite-blob" --version 2> /dev/null || echo '?'), AzureStor $(Rscript -e 'cat(format(packageVersion("AzureStor")))')"
