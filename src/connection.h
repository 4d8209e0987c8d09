// One end of a worker link: a non-blocking Unix socket carrying messages.
//
// A message is a sequence of chunks, each a 64-bit length and that many
// bytes, ended by a zero-length chunk. Chunking lets the serializer stream
// a value of any size (also above 2 GiB) without knowing its length first,
// and lets large vector data go straight from the vector's memory to the
// socket and back into the new vector's memory.
//
// Nothing here calls R: failures come back as `false` with the reason in
// failure(), so callers inside R's serializer callbacks can raise an R
// condition with no C++ object left to destroy.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bgpool {

class Connection {
 public:
  // Called while waiting on the socket; returns true when the wait should
  // stop because the user interrupted.
  using InterruptCheck = bool (*)();

  Connection(int fd, InterruptCheck check);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  // A connection that failed mid-message can never carry another one.
  bool broken() const { return broken_; }
  bool interrupted() const { return interrupted_; }
  const std::string& failure() const { return failure_; }
  void mark_broken(const std::string& why);

  // Writing a message: put() any number of times, then end_message().
  bool put(const void* data, size_t n);
  bool end_message();

  // Reading a message: begin_message() (false at the end of the stream, or
  // on failure), get() any number of times, then end_read().
  bool begin_message();
  bool get(void* dst, size_t n);
  bool end_read();

  // Bytes already received but not yet read (taken in while writing).
  bool has_buffered_input() const { return in_pos_ < in_.size(); }

  // File descriptors to pass with the next bytes sent (SCM_RIGHTS); the
  // peer takes them, in order, with take_fd() once it has read the message.
  void attach_fds(const std::vector<int>& fds) { fds_out_ = fds; }
  int take_fd();

  // Unframed bytes, used only for the handshake before any message.
  bool write_raw(const void* data, size_t n);
  bool read_raw(void* dst, size_t n, double timeout_seconds);

 private:
  bool send_chunks(const void* data, size_t n, bool last);
  bool send_all(iovec* iov, int count);
  bool read_stream(void* dst, size_t n);
  bool read_chunk_header();
  bool receive_some(char* dst, size_t capacity, size_t* got);
  bool take_in_available();
  bool refill(size_t* got);
  bool wait(short events, double timeout_seconds, short* revents);
  bool fail(const std::string& why);
  void compact_input();

  int fd_;
  InterruptCheck check_;
  bool broken_ = false;
  bool interrupted_ = false;
  bool peer_closed_ = false;
  std::string failure_;

  std::vector<int> fds_out_;   // to go with the next sendmsg
  std::vector<int> fds_in_;    // received, not yet taken
  std::vector<char> out_;      // small writes waiting to go out as one chunk
  std::vector<char> in_;       // received bytes not yet read
  size_t in_pos_ = 0;
  uint64_t chunk_left_ = 0;    // unread payload bytes of the current chunk
  bool reading_ = false;
  bool message_ended_ = false; // the terminator chunk has been read
};

}  // namespace bgpool
