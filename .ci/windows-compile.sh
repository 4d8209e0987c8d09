#!/usr/bin/env bash
# Compiles the sources src/Makevars.win builds with MinGW-w64 (Debian's
# g++-mingw-w64-x86-64-posix, installed when missing and we are root), as
# the Windows build would, and checks that nothing of bgpool's own is left
# undefined when they are linked together: the DLL then needs only R's
# and the C++ runtime's symbols. Uses R's headers from this machine.
# Usage: bash .ci/windows-compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cxx=x86_64-w64-mingw32-g++-posix
if ! command -v "$cxx" > /dev/null; then
  if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    echo "Installing from Debian: g++-mingw-w64-x86-64-posix"
    { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        g++-mingw-w64-x86-64-posix; } > /dev/null
  else
    echo "windows-compile: $cxx is missing (and not root or no apt-get): not checked" >&2
    exit 0
  fi
fi

objects=$(sed -n '/^OBJECTS *=/,/[^\\]$/p' src/Makevars.win | sed 's/^OBJECTS *=//; s/\\//g')
flags=$(sed -n 's/^PKG_CPPFLAGS *= *//p' src/Makevars.win)
rcpp=$(Rscript -e 'cat(system.file("include", package = "Rcpp"))')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for object in $objects; do
  source=src/${object%.o}.cpp
  mkdir -p "$out/$(dirname "$object")"
  # shellcheck disable=SC2086
  "$cxx" -std=gnu++17 -O2 -Wall -Wno-attributes $flags -I"$(R RHOME)/include" \
    -I/usr/share/R/include -I"$rcpp" -c "$source" -o "$out/$object"
done
(cd "$out" && x86_64-w64-mingw32-ld -r -o all.o $objects)
undefined=$(x86_64-w64-mingw32-nm -u "$out/all.o" | awk '{print $2}' | x86_64-w64-mingw32-c++filt |
            grep -E 'bgpool|^(pool|worker|rng|shared|protocol|holds|template)_' || true)
if [ -n "$undefined" ]; then
  echo "windows-compile: the Windows build leaves these undefined:" >&2
  echo "$undefined" >&2
  exit 1
fi
echo "windows-compile: $(echo $objects | wc -w) sources of src/Makevars.win compiled with $cxx; none of bgpool's symbols undefined"
