# make demo   install what is missing, then run the seed example and a showcase
# make test   install what is missing, then run the whole test suite
# make bench  the benchmarks against parallel (and mirai when installed)
# make bench-azure  AzureStor transfers against Azurite: sequential, AzureRMR's pool, bgpool
# make document  regenerate RcppExports, NAMESPACE and man/ (developers)

LIB := $(CURDIR)/.lib
export R_LIBS := $(LIB)
# keep test runs within the machine's two cores, as R CMD check does
export _R_CHECK_LIMIT_CORES_ ?= TRUE

.PHONY: deps install demo test bench bench-azure document

deps:
	@Rscript .ci/deps.R
	@bash .ci/pandoc.sh

install: deps
	@mkdir -p $(LIB)
	@R CMD INSTALL --preclean --no-multiarch --library=$(LIB) . > $(LIB)/install.log 2>&1 || \
	  { cat $(LIB)/install.log; exit 1; }
	@echo "bgpool installed in $(LIB)"

demo: install
	@Rscript inst/examples/demo.R

test: install
	@bash .ci/azure-deps.sh
	@Rscript .ci/test.R

bench: install
	@Rscript inst/bench/bench.R $(ARGS)
	@Rscript .ci/readme-bench.R

bench-azure: install
	@bash .ci/azure-deps.sh
	@Rscript inst/bench/azure_transfer.R $(ARGS)

document: deps
	@Rscript .ci/deps.R roxygen2
	@Rscript -e 'Rcpp::compileAttributes("."); roxygen2::roxygenise(".")'
