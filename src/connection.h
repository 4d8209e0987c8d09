// One end of a link between the master and a worker: messages over a
// non-blocking Unix socket.
//
// A message is a sequence of chunks, each a 64-bit length and that many
// bytes, ended by a zero-length chunk and the number of descriptors that
// came with it. Chunks let the serializer stream a value of any size
// without knowing its length first. A sender that must give a message up
// midway (R jumped out of its serializer) ends it with an abort marker
// instead, and the reader drops it: no message is ever left half-written.
//
// The descriptors of a message (shared memory segments, found while its
// value is serialized) go with its last bytes; the reader takes exactly
// the trailer's count for that message.
//
// The reader receives a whole message before anyone decodes it: R's
// unserializer then reads from memory and can never be stopped halfway by
// the link. A wait for more bytes that an interrupt stops keeps its place:
// the message is finished (or dropped) by a later read. A writer that
// cannot go on because the peer is not reading, and sees an interrupt,
// goes on into memory; what is left goes out with flush(), so an interrupt
// never leaves the peer with half a message.
//
// Nothing here calls R, except through the interrupt callback.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bgpool {

// A byte buffer that grows without zero-filling what it adds: received
// bytes are written over it at once.
class Buffer {
 public:
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Adds n bytes to the end (their content unset) and returns them.
  char* extend(size_t n);
  void append(const void* bytes, size_t n);
  void resize_down(size_t n) { size_ = n; }
  // Drops the first n bytes.
  void drop_front(size_t n);
  // Empties it, giving back memory beyond `keep` bytes.
  void clear(size_t keep);

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0, capacity_ = 0;
};

class SegmentStore;

class Connection {
 public:
  // Called while waiting on the socket; returns true when the wait should
  // stop because an interrupt is pending. nullptr: never interrupted.
  using InterruptPoll = bool (*)();

  enum class Status {
    Complete,     // a whole message has come
    Pending,      // not yet (only when not waiting)
    Interrupted,  // a wait was stopped by an interrupt; call again later
    Aborted,      // the sender gave the message up; it was dropped
    Failed,       // the link is broken (see failure())
  };

  Connection(int fd, InterruptPoll interrupt_poll);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  void set_interrupt_poll(InterruptPoll poll) { interrupt_poll_ = poll; }
  bool broken() const { return broken_; }
  // Whether descriptors can go with messages: not through ssh, which
  // carries a remote host's links.
  bool passes_fds() const { return passes_fds_; }
  void set_passes_fds(bool passes) { passes_fds_ = passes; }
  // Where exported shared vectors go for a peer on another host (shared.h).
  SegmentStore* segment_store() const { return segment_store_; }
  void set_segment_store(SegmentStore* store) { segment_store_ = store; }
  const std::string& failure() const { return failure_; }
  void mark_broken(const std::string& why);

  // Writing a message: begin_write(), put() any number of times, then
  // end_write() with the descriptors that go with it (at most
  // kMaxDescriptors), or abort_write() to give it up.
  bool begin_write();
  bool put(const void* data, size_t n);
  bool end_write(const std::vector<int>& fds = {});
  void abort_write();
  // Whether bytes wait to go out (a write went on into memory), and
  // sending what the socket takes of them now, without waiting.
  bool has_pending_output() const { return out_.size() > out_sent_; }
  size_t pending_output() const { return out_.size() - out_sent_; }
  bool flush();

  // Reading: read() waits until the next message has come whole (messages
  // the sender aborted are dropped on the way); then message() holds its
  // payload, with its descriptors, until the next read or release_message().
  Status read() { return read_whole(true); }
  // As read(), without waiting: Pending until a message is complete.
  Status read_available() { return read_whole(false); }
  // Bytes received that no read has used yet.
  bool has_input() const { return buffered() > 0; }
  // Whether the other side has closed the connection with nothing more
  // sent: looked at without taking anything or waiting.
  bool hung_up() const;
  // Whether a message has begun to come (or has come whole).
  bool receiving() const { return reading_ || message_ready_ || buffered() > 0; }
  const Buffer& message() const { return message_; }
  // Takes descriptor `index` of the message read last (-1 when there is no
  // such descriptor or it was taken already); the caller owns it.
  int take_descriptor(size_t index);
  // Closes the descriptors of the message read last that were not taken.
  void release_message();
  // Drops the message read last, or the next one (the rest of the one under
  // way); with may_wait false, Pending until it has come whole.
  Status discard(bool may_wait);

  // How many messages this end has written whole, and read (or dropped)
  // whole: the difference is what the peer still owes, when every message
  // gets one reply.
  uint64_t written() const { return written_; }
  uint64_t read_count() const { return read_count_; }

  // Unframed bytes, used only for the handshake before any message.
  bool write_raw(const void* data, size_t n);
  bool read_raw(void* dst, size_t n, double timeout_seconds);

  static constexpr size_t kMaxDescriptors = 253;  // the kernel's limit per sendmsg

 private:
  enum class ReadState { ChunkLength, Payload, Trailer };

  bool send_now(const void* data, size_t n);
  bool send_iov(iovec* iov, int count);
  ssize_t send_once(iovec* iov, int count, int flags);
  void close_chunk();
  bool flush_buffer();
  bool wait_writable();
  Status read_whole(bool may_wait);
  Status step_read(bool may_wait, bool keep);
  bool receive_more(bool may_wait, Status* status);
  bool receive(char* dst, size_t capacity, size_t* got);
  size_t buffered() const { return in_.size() - in_used_; }
  bool fail(const std::string& why);
  Status failed(const std::string& why);
  void close_message_fds();

  int fd_;
  InterruptPoll interrupt_poll_;
  bool broken_ = false;
  bool passes_fds_ = true;
  SegmentStore* segment_store_ = nullptr;
  bool peer_closed_ = false;
  std::string failure_;

  // Writing.
  std::vector<int> fds_out_;   // to go with the next bytes sent
  Buffer out_;                 // small writes gathered, or what waits to go out
  size_t out_sent_ = 0;        // bytes of out_ already sent
  static constexpr size_t kNoChunk = ~size_t(0);
  size_t open_chunk_ = kNoChunk;  // where in out_ the open chunk's length goes
  bool deferring_ = false;     // an interrupt came: the message goes on into out_
  bool writing_ = false;
  uint64_t written_ = 0;

  // Reading.
  Buffer in_;                  // bytes received; those from in_used_ on not yet used
  size_t in_used_ = 0;
  std::vector<int> fds_in_;    // descriptors received, not yet given to a message
  bool reading_ = false;       // a message is under way
  bool message_ready_ = false; // message_ holds a whole message not yet released
  ReadState state_ = ReadState::ChunkLength;
  bool aborted_ = false;       // the trailer read ends an aborted message
  uint64_t chunk_left_ = 0;    // payload bytes of the current chunk still to come
  Buffer message_;             // the payload of the message being read, or read last
  std::vector<int> message_fds_;
  uint64_t read_count_ = 0;
};

}  // namespace bgpool
