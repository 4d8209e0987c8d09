#!/usr/bin/env bash
# Installs the programs that building, checking and testing need, when
# missing, from Debian's packages (where apt-get is available and we are
# root): pandoc, which rmarkdown needs for the vignette and the R Markdown
# test (tests/testthat/test-rmarkdown.R); qpdf, which R CMD check --as-cran
# needs to check the vignette's PDFs; strace, with which test-cluster.R
# checks that no TCP socket is ever made; OpenSSH's server, which
# test-ssh.R starts as the SSH hosts of remote workers; Slurm and munge,
# of which test-slurm.R starts a one-node cluster. Says nothing when all
# are there.
# Without one of them its test is skipped (saying why), so a failure here
# is reported but does not stop the build.
# Usage: bash .ci/tools.sh
set -euo pipefail

missing=()
for tool in pandoc qpdf strace sshd:openssh-server munged:munge slurmctld:slurm-wlm; do
  command -v "${tool%%:*}" > /dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get > /dev/null || [ "$(id -u)" != 0 ]; then
  echo "missing (and not root or no apt-get, so not installed): ${missing[*]}; without pandoc the vignette cannot be built and the R Markdown test is skipped, without strace one test of the cluster is, without openssh-server the SSH tests are, without slurm-wlm and munge the Slurm tests are" >&2
  exit 0
fi
echo "Installing from Debian: ${missing[*]}"
if ! out=$( { apt-get update -qq &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } 2>&1 ); then
  printf '%s\n' "$out" >&2
  echo "could not install ${missing[*]}" >&2
fi
