// The pool: worker processes, their connections, their lifecycle.
#pragma once

#include <sys/types.h>

#include <cmath>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "connection.h"
#include "platform.h"

namespace bgpool {

// Where the workers' standard output and error go.
enum class Output {
  Logs,    // a log file per worker in the pool's directory
  File,    // one file that all append to
  Master,  // the master's own stdout and stderr
};

// How to start the template process that forks the workers; from R.
struct WorkerCommand {
  std::string program;                 // Rscript
  std::vector<std::string> args;
  std::vector<std::string> extra_env;  // "NAME=value"
  double start_timeout = 60;           // seconds for all workers to connect
  Output output = Output::Logs;
  std::string output_file;             // for Output::File
};

// A run of consecutive elements sent to a worker as one message.
struct Range {
  double start;
  double length;
};

struct Worker {
  int slot = 0;
  pid_t pid = -1;
  std::unique_ptr<Connection> conn;
  std::string log_path;
  os::ExitInfo exit;
  // Messages sent for the current call whose replies are awaited, oldest
  // first; and replies still owed for calls that were abandoned.
  std::deque<Range> in_flight;
  int stale_replies = 0;
  // Calls sent through parallel's node interface (R/cluster.R) whose
  // replies are awaited; and the descriptor of the R connection that
  // mirrors this worker's socket, so R can poll it (-1: none).
  std::deque<double> node_calls;
  int mirror_fd = -1;
  // The call whose function this worker has already received.
  double job_call = -1;
  // When the task at the head of in_flight started (for time limits), and
  // when this worker was last told to drop its work.
  double busy_since = 0;
  double cancelled_at = 0;

  bool alive() const { return pid > 0 && !exit.exited; }
  bool usable() const { return alive() && conn && !conn->broken(); }
  int awaiting() const { return static_cast<int>(in_flight.size()) + stale_replies; }
};

class Pool {
 public:
  Pool(const WorkerCommand& command, const std::string& temp_dir);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Starts `size` workers and waits until each has connected and proved
  // itself with the pool's token. Throws on failure (nothing left running).
  //
  // Workers are forked from a template: one R process, started once per
  // pool with bgpool loaded, so a worker starts in milliseconds instead of
  // paying R's start-up. Each fork is re-parented to the master (a child
  // subreaper while workers start), which reaps it like a child it started.
  void start(int size);
  // Stops every worker: asks politely, then kills; reaps; removes files.
  void stop();
  bool stopped() const { return stopped_; }

  int size() const { return static_cast<int>(workers_.size()); }
  Worker& worker(int slot) { return *workers_[slot]; }
  const std::string& dir() const { return dir_; }

  // Reaps workers that have exited; returns whether all are still usable.
  bool check_workers();
  // Replaces workers that are dead or whose connection broke (but not
  // while a cluster node awaits their reply); returns the slots replaced
  // (their new processes start from an empty state).
  std::vector<int> replace_unusable();
  // Ends a worker now (it misbehaved, or its link broke).
  void kill_worker(Worker& w);
  // Ends a worker whose link failed, after giving it a moment to report its
  // own exit status; returns how it ended, for the user.
  std::string retire(Worker& w);
  // Points the worker's mirror descriptor at its socket (`ready` false) or
  // at a socket that always polls as readable (a reply has been read and
  // awaits R). Makes `fd` the mirror when it is not -1.
  void mirror(Worker& w, bool ready, int fd = -1);
  // Asks a worker to abandon the tasks of call `call_id` (SIGUSR1 carrying
  // the call's number; the worker interrupts only that call's tasks).
  void cancel(Worker& w, double call_id);
  // The last lines a worker wrote to its stdout/stderr: enough to hold R's
  // report of a crash with its traceback. With a shared output file, the
  // last lines of all workers.
  std::string log_tail(const Worker& w, size_t max_lines = 40) const;

  double next_call_id() { return ++call_id_; }

 private:
  class Listening;
  void reset(Worker& w);
  void start_template();
  std::string output_path(const Worker& w) const;
  void fork_workers(const std::vector<Worker*>& waiting);
  struct Greeting;
  void connect_all(const std::vector<Worker*>& waiting);
  void accept_all(std::vector<Greeting>& greetings);
  bool greet(Greeting& g, std::vector<Worker*>& waiting);
  void wait_exit(Worker& w, double seconds);

  WorkerCommand command_;
  std::string dir_, socket_path_, token_;
  int listen_fd_ = -1;
  std::vector<std::unique_ptr<Worker>> workers_;
  Worker template_;
  double call_id_ = 0;
  bool stopped_ = false;
};

// Thrown when the user interrupted a wait inside R's serializer (where R
// must not jump); turned into R's interrupt at the boundary to R.
struct Interrupted {};

// Whether the user has asked to interrupt (checked without R jumping).
bool interrupt_pending();
// Lets R act on a pending interrupt or time limit: R jumps out, as a C++
// exception through the caller's frames, so their destructors clean up.
void check_user_interrupt();

// The number a worker sees for a call in its cancel signal.
inline int call_tag(double call_id) {
  return 1 + static_cast<int>(std::fmod(call_id, 2147483646.0));
}

// The fixed-size greeting a worker (or the template) sends right after
// connecting; its pid is taken from the socket's credentials instead.
struct Hello {
  char magic[8];
  uint32_t slot;
  char token[64];
};
constexpr char kHelloMagic[8] = {'B', 'G', 'P', 'O', 'O', 'L', '2', 0};
constexpr uint32_t kTemplateSlot = 0xFFFFFFFF;

// What the master asks of the template: fork a worker for `slot` that
// writes its output to the log file whose path (log_length bytes) follows.
struct ForkRequest {
  uint32_t slot;
  uint32_t log_length;
};

}  // namespace bgpool
