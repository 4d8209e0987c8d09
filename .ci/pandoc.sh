#!/usr/bin/env bash
# Installs pandoc, which rmarkdown needs to build the vignette and for the
# R Markdown test (tests/testthat/test-rmarkdown.R), when it is missing:
# Debian's package, where apt-get is available and we are root. Says nothing
# when pandoc is already there. Without it, the vignette cannot be built and
# that test is skipped, so a failure here is reported but does not stop the
# build.
# Usage: bash .ci/pandoc.sh
set -euo pipefail

command -v pandoc > /dev/null && exit 0

if ! command -v apt-get > /dev/null || [ "$(id -u)" != 0 ]; then
  echo "pandoc is missing (and not root or no apt-get, so not installed): the vignette cannot be built and the R Markdown test is skipped" >&2
  exit 0
fi
echo "Installing from Debian: pandoc"
if ! out=$( { apt-get update -qq &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pandoc; } 2>&1 ); then
  printf '%s\n' "$out" >&2
  echo "could not install pandoc: the vignette cannot be built and the R Markdown test is skipped" >&2
fi
