// The pool: worker processes, their connections, their lifecycle.
#pragma once

#include <Rcpp.h>
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "connection.h"
#include "platform.h"
#include "shared.h"

namespace bgpool {

// Where the workers' standard output and error go.
enum class Output {
  Logs,    // a log file per worker in the pool's directory
  File,    // one file that all append to
  Master,  // the master's own stdout and stderr
};

// How to start the template of one host, the process that forks its
// workers: on this machine R itself; on another, either ssh, which runs
// `remote_command` there and forwards `remote_socket` there to the pool's
// socket here, so that the host's template and workers connect to the
// master through the SSH connection; or a batch job (`tcp`: sbatch, whose
// arguments hold the job), whose template and workers connect to the
// master over TCP and answer a challenge with the pool's token. From R
// (R/hosts.R, R/slurm.R).
struct HostCommand {
  std::string name;                    // for messages; "" for this machine
  std::string program;                 // R, or ssh
  std::vector<std::string> args;       // R's arguments, or ssh's options
  std::vector<std::string> extra_env;  // this machine: the template's
  int workers = 0;
  std::string destination;             // remote: ssh's destination
  std::string remote_socket, remote_command;
  bool tcp = false;
  std::string log_path;                // tcp: where the job writes its output
  bool remote() const { return !destination.empty() || tcp; }
};

// How to start the pool's workers; from R.
struct WorkerCommand {
  std::vector<HostCommand> hosts;      // this machine's first
  double start_timeout = 60;           // seconds for all workers to connect
  Output output = Output::Logs;
  std::string output_file;             // for Output::File
  std::string listen_address;          // for tcp hosts: where to listen
};

// A run of consecutive elements sent to a worker as one message.
struct Range {
  double start;
  double length;
};

// A call sent through parallel's node interface (nodes.cpp): its number,
// and the tag parallel gave it, which its reply carries back.
struct NodeCall {
  double call_id;
  Rcpp::RObject tag;
};

struct Worker {
  int slot = 0;   // -1 for a template
  int host = 0;   // its index in WorkerCommand::hosts
  pid_t pid = -1;
  std::unique_ptr<Connection> conn;
  std::string log_path;
  os::ExitInfo exit;
  // The fork request that is to start this worker (see TemplateRequest).
  uint64_t fork_request = 0;
  // Requests of the call under way whose replies are awaited, oldest first.
  std::deque<Range> in_flight;
  // Calls sent through parallel's node interface whose replies are
  // awaited, oldest first.
  std::deque<NodeCall> node_calls;
  // Replies to such calls read already but not yet asked for.
  std::deque<Rcpp::RObject> node_replies;
  // The descriptor that the node's R connection polls (node_connection.c);
  // null when the node has none.
  int* poll_fd = nullptr;
  // The call whose job this worker has already received.
  double job_call = -1;
  // When the task at the head of in_flight started (for time limits), and
  // when this worker was last told to drop its work.
  double busy_since = 0;
  double cancelled_at = 0;

  bool alive() const { return pid > 0 && !exit.exited; }
  bool usable() const { return alive() && conn && !conn->broken(); }
  // Replies the worker still owes (every request gets one, in order), and
  // those of them for calls that were abandoned: the oldest.
  uint64_t owed() const { return conn ? conn->written() - conn->read_count() : 0; }
  uint64_t stale() const { return owed() - in_flight.size() - node_calls.size(); }
};

struct TemplateRequest;

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
  // paying R's start-up. The template reaps the workers it forks and tells
  // the master each one's pid and how each ended. The template and the
  // workers hold the read end of the pool's lifeline, a pipe whose write
  // end only the master holds: when the master dies, however it dies, they
  // see it close and exit.
  void start(int size);
  // Stops every worker: asks politely, then kills; reaps; removes files.
  // In a process forked from the master (which shares its sockets), only
  // lets go of this copy of the pool: the master's workers are not ours.
  void stop();
  bool stopped() const { return stopped_; }
  // Whether this process is the one that created the pool.
  bool owned() const;

  int size() const { return static_cast<int>(workers_.size()); }
  // The host a worker runs on, for messages: "" for this machine.
  const std::string& host_name(const Worker& w) const { return hosts_[w.host]->command.name; }
  bool remote(const Worker& w) const { return hosts_[w.host]->command.remote(); }
  Worker& worker(int slot) { return *workers_[slot]; }
  const std::string& dir() const { return dir_; }

  // Reaps workers that have exited; returns whether all are still usable.
  bool check_workers();
  // Starts new workers in `slots` (0-based), from an empty state, in place
  // of those there (killed first, if still alive).
  void replace(const std::vector<int>& slots);
  // Sends `sig` to a worker: itself on this machine, through its host's
  // template on another.
  void signal(Worker& w, int sig);
  // Ends a worker now (it misbehaved, or its link broke).
  void kill_worker(Worker& w);
  // Ends a worker whose link failed, after giving it a moment to report its
  // own exit status; returns how it ended, for the user.
  std::string retire(Worker& w);
  // Asks a worker to abandon the tasks of call `call_id` and of every
  // earlier call: the call's number goes on the cancel board (shared
  // memory every worker maps, a cell per slot), then SIGUSR1.
  void cancel(Worker& w, double call_id);
  // The last lines a worker wrote to its stdout/stderr: enough to hold R's
  // report of a crash with its traceback. With a shared output file, the
  // last lines of all workers.
  std::string log_tail(const Worker& w, size_t max_lines = 40) const;
  // Keeps each worker's own log below the limit (0: none): a log over it
  // keeps only its last part. Checked at most every few seconds.
  void set_log_limit(double bytes) { log_limit_ = bytes; }
  void trim_logs();

  // Writes the pool's token to a new file only the user can read, for
  // hosts that read it there (batch jobs).
  void write_token(const std::string& path) const;

  double next_call_id() { return ++call_id_; }
  // The bytes from which vectors in messages go as shared memory.
  void set_share_threshold(double bytes) { share_threshold_ = bytes; }
  double share_threshold() const { return share_threshold_; }
  // Tells the remote hosts' templates to drop the exports released here.
  void drop_released_exports();
  // A descriptor that polls as readable while the pool lives.
  int ready_fd();

 private:
  class Listening;
  struct Greeting;
  // A host: its command, and its template (on another machine: the ssh
  // process that runs it, whose stdin is that template's lifeline). On
  // another machine the template keeps the exports its workers map.
  struct Host : SegmentStore {
    HostCommand command;
    Worker template_;
    int lifeline = -1;         // remote: the write end of ssh's stdin
    std::set<uint64_t> stored;  // the ids of the exports its template keeps
    bool put(uint64_t id, const void* data, size_t bytes) override;
  };
  Host& host_of(const Worker& w) { return *hosts_[w.host]; }
  void reset(Worker& w);
  void spawn_template(Host& h);
  std::string output_path(const Worker& w) const;
  void ask_template(Host& h, const TemplateRequest& request, const std::string& path = "");
  void fork_workers(const std::vector<Worker*>& waiting);
  void connect_all(const std::vector<Worker*>& waiting);
  void start_workers(const std::vector<Worker*>& waiting);
  void accept_all(std::vector<Greeting>& greetings);
  bool greet(Greeting& g, std::vector<Worker*>& waiting);
  void take_reports(Host& h);
  void check_started(const std::vector<Worker*>& waiting);
  void wait_exit(Worker& w, double seconds);
  bool ended(Worker& w);
  void reaped(Worker& w);
  void release();
  void let_go();

  WorkerCommand command_;
  std::string dir_, socket_path_, token_;
  pid_t owner_;
  int lock_fd_ = -1;
  int ready_fd_ = -1;
  int lifeline_ = -1;          // the write end, which only the master holds
  int lifeline_read_ = -1;     // the end this machine's template gets
  int board_fd_ = -1;          // the cancel board (a segment of size() cells)
  uint64_t* board_ = nullptr;
  int listen_fd_ = -1;
  int tcp_listen_fd_ = -1;     // while starting, when a host connects over TCP
  int tcp_port_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> starting_;  // workers being started, whose pids are awaited
  std::vector<std::unique_ptr<Host>> hosts_;
  double call_id_ = 0;
  uint64_t fork_requests_ = 0;
  double log_limit_ = 0;
  double share_threshold_ = 1e6;
  double logs_checked_ = 0;
  bool stopped_ = false;
};

// The descriptors the template gets, by number: the read end of the
// lifeline, the cancel board, and the master's own stdout and stderr (for
// workers whose output goes there). On another machine the shell that
// runs it gives it its stdin (ssh's) as the lifeline and its own stdout
// and stderr (ssh's, to the host's log here); it makes its own board.
constexpr int kLifelineFd = 5, kBoardFd = 6, kMasterStdoutFd = 3, kMasterStderrFd = 4;

// The fixed-size greeting a worker (or the template) sends right after
// connecting; its pid is taken from the socket's credentials instead.
struct Hello {
  char magic[8];
  uint32_t slot;
  char token[64];
};
constexpr char kHelloMagic[8] = {'B', 'G', 'P', 'O', 'O', 'L', '3', 0};
// Over TCP the master first sends a challenge of kChallengeBytes, and
// `token` holds HMAC-SHA-256(token, challenge) instead of the token.
constexpr size_t kChallengeBytes = 32;
// A template greets with kTemplateSlot - its host's index.
constexpr uint32_t kTemplateSlot = 0xFFFFFFFF;

// What the master asks of a template: fork a worker for `slot` that
// writes its output to the file whose path (path_length bytes) follows,
// or to the template's own output (this machine's: the master's) when the
// path is empty; or send a signal to the worker of `slot`, after putting
// `cancel_call` on the cancel board when it is not 0 (for a host on
// another machine, where the master can do neither itself). `request`
// numbers the fork requests, so that a report on one the master gave up
// (an interrupt came while it waited) is never taken for a later one's.
//
// On another machine the template also keeps exports: a store request's
// `request` is the export's id and `size` the bytes of its data, which
// follow; a drop request's `request` the id of one no longer needed. A
// worker asks for one on the channel its template gave it at its fork (the
// id, 8 bytes) and gets a message holding its descriptor.
enum RequestKind : uint32_t { kAskFork = 1, kAskSignal = 2, kAskStore = 3, kAskDrop = 4 };
struct TemplateRequest {
  uint32_t kind;  // RequestKind
  uint32_t slot;
  uint64_t request;
  uint32_t path_length;
  int32_t signal;
  uint64_t cancel_call;
  uint64_t size;
};

// What the template tells the master: a worker it forked (its pid, or -1
// and why not), or a worker that ended (and how).
struct TemplateReport {
  uint32_t kind;         // ReportKind
  uint32_t slot;         // forked
  uint64_t request;      // forked: its TemplateRequest
  int32_t pid;
  int32_t error;         // forked: errno of what failed
  uint32_t failed_step;  // forked: ForkStep
  int32_t status;        // ended: exit status
  int32_t signal;        // ended: terminating signal, or 0
  uint32_t reserved;
};

enum ReportKind : uint32_t { kReportForked = 1, kReportEnded = 2 };
enum ForkStep : uint32_t { kForkOk, kForkOpenOutput, kForkFork };

}  // namespace bgpool
