// Jumping L'Ecuyer-CMRG streams ahead (see rng.h). The generator's two
// components are linear recurrences mod m1 and mod m2: advancing one of
// them by 2^127 steps multiplies its three values by a fixed matrix (the
// matrices below, from L'Ecuyer's RngStreams, as R's parallel package uses
// them). Jumping n streams multiplies by that matrix's n-th power, the
// product of its squarings 2^j for the bits j of n.
#include "rng.h"

#include <stdexcept>

namespace bgpool {

namespace {

using Matrix = std::array<std::array<uint64_t, 3>, 3>;

constexpr uint64_t kM1 = 4294967087u;
constexpr uint64_t kM2 = 4294944443u;

constexpr Matrix kJump1 = {{{2427906178u, 3580155704u, 949770784u},
                            {226153695u, 1230515664u, 3580155704u},
                            {1988835001u, 986791581u, 1230515664u}}};
constexpr Matrix kJump2 = {{{1464411153u, 277697599u, 1610723613u},
                            {32183930u, 1464411153u, 1022607788u},
                            {2824425944u, 32183930u, 2093834863u}}};

// Entries and values are below 2^32, so each product fits in 64 bits.
Matrix multiply(const Matrix& a, const Matrix& b, uint64_t m) {
  Matrix out{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      out[i][j] = (a[i][0] * b[0][j] % m + a[i][1] * b[1][j] % m + a[i][2] * b[2][j] % m) % m;
  return out;
}

void apply(const Matrix& a, uint64_t* v, uint64_t m) {
  uint64_t x = v[0], y = v[1], z = v[2];
  for (int i = 0; i < 3; ++i) v[i] = (a[i][0] * x % m + a[i][1] * y % m + a[i][2] * z % m) % m;
}

// The jump matrices raised to 2^j, j = 0..63, computed once.
struct Powers {
  std::array<Matrix, 64> first, second;
  Powers() {
    first[0] = kJump1;
    second[0] = kJump2;
    for (int j = 1; j < 64; ++j) {
      first[j] = multiply(first[j - 1], first[j - 1], kM1);
      second[j] = multiply(second[j - 1], second[j - 1], kM2);
    }
  }
};

const Powers& powers() {
  static const Powers table;
  return table;
}

RngState state_of(SEXP seed) {
  if (TYPEOF(seed) != INTSXP || XLENGTH(seed) != 7 || INTEGER(seed)[0] % 100 != 7)
    throw std::invalid_argument("bgpool: internal error: not an L'Ecuyer-CMRG .Random.seed");
  RngState state;
  for (int i = 0; i < 6; ++i) state[i] = static_cast<uint32_t>(INTEGER(seed)[i + 1]);
  return state;
}

SEXP seed_of(int kind, const RngState& state) {
  SEXP seed = Rf_allocVector(INTSXP, 7);
  INTEGER(seed)[0] = kind;
  for (int i = 0; i < 6; ++i) INTEGER(seed)[i + 1] = static_cast<int>(static_cast<uint32_t>(state[i]));
  return seed;
}

}  // namespace

RngState jump_streams(const RngState& state, uint64_t streams) {
  RngState out = state;
  const Powers& p = powers();
  for (int j = 0; streams != 0; ++j, streams >>= 1) {
    if (!(streams & 1)) continue;
    apply(p.first[j], &out[0], kM1);
    apply(p.second[j], &out[3], kM2);
  }
  return out;
}

TaskStreams::TaskStreams(SEXP base) : base_(state_of(base)), current_(base_) {
  kind_ = INTEGER(base)[0];
}

void TaskStreams::enter(uint64_t stream) {
  current_ = stream >= stream_ ? jump_streams(current_, stream - stream_)
                               : jump_streams(base_, stream);
  stream_ = stream;
  // A new vector each time: a task may have kept the previous one.
  static SEXP symbol = Rf_install(".Random.seed");
  SEXP seed = PROTECT(seed_of(kind_, current_));
  Rf_defineVar(symbol, seed, R_GlobalEnv);
  UNPROTECT(1);
}

}  // namespace bgpool

// The L'Ecuyer-CMRG .Random.seed `streams` streams after `seed`, as that
// many calls of parallel::nextRNGStream() give.
// [[Rcpp::export(rng = false)]]
SEXP rng_jump(SEXP seed, double streams) {
  bgpool::RngState state = bgpool::state_of(seed);
  return bgpool::seed_of(INTEGER(seed)[0],
                         bgpool::jump_streams(state, static_cast<uint64_t>(streams)));
}
