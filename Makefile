# make demo   install what is missing, then run the seed example and a showcase
# make test   install what is missing, then run the whole test suite three ways: the
#             native build, the POSIX-only build (macOS's path), the psock backend (Windows's)
# make bench  the benchmarks against parallel (and mirai when installed), at 2 and 10
#             workers, and the curves; ARGS="--quick" for a short run
# make bench-ssh  workers on 2 SSH hosts (a local sshd) against a PSOCK cluster on them
# make bench-azure  AzureStor transfers against Azurite: sequential, AzureRMR's pool, bgpool
# make check  R CMD build, then R CMD check --as-cran on the tarball, in a temporary directory
# make check-windows  compile what src/Makevars.win builds with MinGW-w64
# make document  regenerate RcppExports, NAMESPACE and man/ (developers)

LIB := $(CURDIR)/.lib
LIB_POSIX := $(CURDIR)/.lib-posix
export R_LIBS := $(LIB)
# keep test runs within the machine's two cores, as R CMD check does
test check: export _R_CHECK_LIMIT_CORES_ ?= TRUE
# the manual needs LaTeX
MANUAL := $(if $(shell command -v pdflatex),,--no-manual)
# the Azure tests run inside the check against Azurite where it is installed
AZURITE := $(CURDIR)/tests/azurite
check: export BGPOOL_AZURITE_DIR ?= $(if $(wildcard $(AZURITE)/node_modules/.bin/azurite-blob),$(AZURITE))

.PHONY: deps install install-posix demo test check check-windows bench bench-azure bench-ssh document

deps:
	@Rscript .ci/deps.R
	@bash .ci/tools.sh

install: deps
	@mkdir -p $(LIB)
	@R CMD INSTALL --preclean --no-multiarch --library=$(LIB) . > $(LIB)/install.log 2>&1 || \
	  { cat $(LIB)/install.log; exit 1; }
	@echo "bgpool installed in $(LIB)"

# the build with the POSIX calls only (macOS's path), which make test runs too
install-posix: deps
	@mkdir -p $(LIB_POSIX)
	@BGPOOL_POSIX_ONLY=1 R CMD INSTALL --preclean --no-multiarch --library=$(LIB_POSIX) . \
	  > $(LIB_POSIX)/install.log 2>&1 || { cat $(LIB_POSIX)/install.log; exit 1; }
	@echo "bgpool (POSIX-only build) installed in $(LIB_POSIX)"

demo: install
	@Rscript inst/examples/demo.R

test: install install-posix
	@bash .ci/azure-deps.sh
	@Rscript .ci/windows-absent.R --check
	@Rscript .ci/test.R

# The results stay in the temporary directory when the check fails or warns.
check: deps
	@dir=$$(mktemp -d -t bgpool-check-XXXXXX) && cd $$dir || exit 1; \
	  R CMD build $(CURDIR) > build.log 2>&1 || { cat build.log; exit 1; }; \
	  R CMD check --as-cran $(MANUAL) bgpool_*.tar.gz; \
	  echo "Tests:"; awk '/^\[ FAIL/ { p = 1 } /^>/ { p = 0 } p' bgpool.Rcheck/tests/testthat.Rout*; \
	  if grep -q '^Status:.*\(ERROR\|WARNING\)' bgpool.Rcheck/00check.log; then \
	    echo "check results in $$dir/bgpool.Rcheck"; exit 1; fi; \
	  rm -rf $$dir

bench: install
	@Rscript inst/bench/bench.R --size 2 $(ARGS)
	@Rscript inst/bench/bench.R --size 10 $(ARGS)
	@Rscript inst/bench/curves.R $(ARGS)
	@Rscript .ci/readme-bench.R

check-windows: deps
	@bash .ci/windows-compile.sh

bench-ssh: install
	@bash .ci/tools.sh
	@Rscript inst/bench/ssh.R $(ARGS)

bench-azure: install
	@bash .ci/azure-deps.sh
	@Rscript inst/bench/azure_transfer.R $(ARGS)

document: deps
	@Rscript .ci/deps.R roxygen2
	@Rscript -e 'Rcpp::compileAttributes("."); roxygen2::roxygenise(".")'
	@Rscript .ci/windows-absent.R
