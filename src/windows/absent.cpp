// Written by .ci/windows-absent.R from RcppExports.cpp; do not edit by hand.
// The routines of the native core, which Windows does not build: R's code
// never calls them there (the "psock" backend runs the pool).
#include <Rcpp.h>

namespace {
[[noreturn]] void absent() {
  Rcpp::stop("bgpool: the native core is not built on this platform; this is a bug in bgpool");
}
}  // namespace

SEXP pool_create(Rcpp::List hosts, double start_timeout, std::string temp_dir, int size, SEXP outfile, std::string listen_address, std::string token_file) { absent(); }
void pool_stop(SEXP xp) { absent(); }
bool pool_owned(SEXP xp) { absent(); }
Rcpp::List pool_state(SEXP xp) { absent(); }
std::vector<int> pool_prepare(SEXP xp, bool drain_cluster, double grace, double log_limit, double share_threshold) { absent(); }
void pool_replace(SEXP xp, std::vector<int> slots) { absent(); }
void pool_kill_workers(SEXP xp, std::vector<int> slots) { absent(); }
SEXP pool_run_elements(SEXP xp, SEXP job, SEXP inputs, bool is_map, double n, double chunk_size, double timeout, int retry, SEXP attempts, SEXP progress) { absent(); }
SEXP pool_run_on_workers(SEXP xp, SEXP fun, SEXP args, std::vector<int> slots) { absent(); }
void pool_node_send(SEXP xp, int slot, SEXP fun, SEXP args, SEXP tag) { absent(); }
SEXP pool_node_receive(SEXP xp, int slot) { absent(); }
SEXP pool_node_receive_any(SEXP xp, std::vector<int> slots) { absent(); }
bool pool_node_busy(SEXP xp) { absent(); }
SEXP pool_node_connection(SEXP xp, int slot) { absent(); }
std::string hmac_sha256_hex(std::string key, Rcpp::RawVector message) { absent(); }
std::string pool_random_name() { absent(); }
bool pool_dir_abandoned(std::string dir) { absent(); }
double shareable_bytes(SEXP x) { absent(); }
std::string vector_hash(SEXP x) { absent(); }
SEXP shared_copy(SEXP x) { absent(); }
int shared_id(SEXP x) { absent(); }
void release_segment(SEXP x) { absent(); }
RcppExport SEXP C_is_shared_vector(SEXP) { absent(); }
RcppExport SEXP C_template_serve() { absent(); }
RcppExport SEXP C_worker_cancel_requested() { absent(); }
RcppExport SEXP C_worker_collect_if_asked(SEXP) { absent(); }
RcppExport SEXP C_worker_collect_later() { absent(); }
RcppExport SEXP C_worker_connect(SEXP) { absent(); }
RcppExport SEXP C_worker_send(SEXP, SEXP, SEXP, SEXP) { absent(); }
RcppExport SEXP C_worker_serve(SEXP) { absent(); }
void bgpool_init_shared(DllInfo* dll) {}
