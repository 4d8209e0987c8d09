// Framed messages over a non-blocking Unix socket; see connection.h.
#include "connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "clock.h"
#include "platform.h"
#include "wait.h"

namespace bgpool {

namespace {

// Writes below this size are gathered in a buffer; larger ones (vector data
// handed over by the serializer) go to the socket from where they lie.
constexpr size_t kDirectWrite = 16 * 1024;
constexpr size_t kOutBuffer = 64 * 1024;
// A chunk's payload at least this large is received straight into the
// message, not through the read-ahead buffer.
constexpr size_t kDirectRead = 16 * 1024;
constexpr size_t kReadAhead = 64 * 1024;
// Buffers shrink back to this after a large message.
constexpr size_t kKeepBytes = 1024 * 1024;
// The serializer never hands over more than a string's 2^31 bytes at once.
constexpr uint64_t kMaxChunk = uint64_t(1) << 32;
constexpr uint64_t kEndChunk = 0;
constexpr uint64_t kAbortChunk = ~uint64_t(0);

// Where send() can be told not to raise SIGPIPE; elsewhere the socket is
// made so (os::no_sigpipe()). Where recvmsg() can mark the descriptors it
// receives close-on-exec as it takes them; elsewhere they are marked after.
#if defined(MSG_NOSIGNAL)
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;
#endif
#if BGPOOL_LINUX
constexpr int kReceiveFlags = MSG_CMSG_CLOEXEC;
#else
constexpr int kReceiveFlags = 0;
#endif

}  // namespace

char* Buffer::extend(size_t n) {
  if (size_ + n > capacity_) {
    size_t capacity = std::max({size_ + n, 2 * capacity_, size_t(4096)});
    std::unique_ptr<char[]> bigger(new char[capacity]);
    if (size_) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = capacity;
  }
  char* at = data_.get() + size_;
  size_ += n;
  return at;
}

void Buffer::append(const void* bytes, size_t n) {
  if (n) std::memcpy(extend(n), bytes, n);
}

void Buffer::drop_front(size_t n) {
  if (n < size_) std::memmove(data_.get(), data_.get() + n, size_ - n);
  size_ = n < size_ ? size_ - n : 0;
}

void Buffer::clear(size_t keep) {
  size_ = 0;
  if (capacity_ > keep) {
    data_.reset();
    capacity_ = 0;
  }
}

Connection::Connection(int fd, InterruptPoll interrupt_poll)
    : fd_(fd), interrupt_poll_(interrupt_poll) {}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
  for (int fd : fds_in_) close(fd);
  for (int fd : fds_out_) close(fd);
  close_message_fds();
}

bool Connection::hung_up() const {
  if (peer_closed_) return !has_input();
  if (has_input()) return false;
  char byte;
  ssize_t rc;
  do rc = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT); while (rc < 0 && errno == EINTR);
  return rc == 0;
}

void Connection::mark_broken(const std::string& why) {
  if (!broken_) failure_ = why;
  broken_ = true;
}

bool Connection::fail(const std::string& why) {
  mark_broken(why);
  return false;
}

Connection::Status Connection::failed(const std::string& why) {
  mark_broken(why);
  return Status::Failed;
}

// ---------------------------------------------------------------------------
// Writing

bool Connection::begin_write() {
  if (broken_) return false;
  writing_ = true;
  return true;
}

// Small writes (most of what the serializer hands over) are gathered into
// one chunk, whose length is filled in when it is closed; large ones go
// from where they lie, as a chunk of their own, after what is gathered.
bool Connection::put(const void* data, size_t n) {
  if (broken_) return false;
  if (n == 0) return true;
  if (n >= kDirectWrite) {
    close_chunk();
    uint64_t length = n;
    out_.append(&length, sizeof length);
    if (!deferring_) return send_now(data, n);
    out_.append(data, n);
    return true;
  }
  if (open_chunk_ == kNoChunk) {
    open_chunk_ = out_.size();
    out_.extend(sizeof(uint64_t));
  }
  out_.append(data, n);
  if (deferring_ || out_.size() - out_sent_ < kOutBuffer) return true;
  return flush_buffer();
}

void Connection::close_chunk() {
  if (open_chunk_ == kNoChunk) return;
  uint64_t length = out_.size() - open_chunk_ - sizeof length;
  std::memcpy(out_.data() + open_chunk_, &length, sizeof length);
  open_chunk_ = kNoChunk;
}

bool Connection::end_write(const std::vector<int>& fds) {
  if (broken_) return false;
  if (fds.size() > kMaxDescriptors) {
    abort_write();
    return fail("too many descriptors for one message");
  }
  // Our own copies: a write that goes on into memory sends them later, when
  // the caller may have closed its own.
  for (int fd : fds) {
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      abort_write();
      return fail(std::string("cannot pass a descriptor: ") + strerror(errno));
    }
    fds_out_.push_back(copy);
  }
  close_chunk();
  uint64_t trailer[2] = {kEndChunk, fds.size()};
  out_.append(trailer, sizeof trailer);
  writing_ = false;
  deferring_ = false;
  ++written_;
  return flush_buffer();
}

void Connection::abort_write() {
  if (!writing_ || broken_) return;
  close_chunk();
  uint64_t trailer[2] = {kAbortChunk, 0};
  out_.append(trailer, sizeof trailer);
  writing_ = false;
  deferring_ = false;
  flush();  // without waiting: this runs while R unwinds
}

// Sends `data` after what is buffered, waiting as long as the peer takes
// to read; an interrupt meanwhile sends the rest into the buffer instead.
bool Connection::send_now(const void* data, size_t n) {
  iovec iov[2] = {{out_.data() + out_sent_, out_.size() - out_sent_},
                  {const_cast<void*>(data), n}};
  int first = iov[0].iov_len ? 0 : 1;
  return send_iov(iov + first, 2 - first);
}

bool Connection::flush_buffer() {
  close_chunk();
  if (!has_pending_output()) {
    out_.clear(kKeepBytes);
    out_sent_ = 0;
    return true;
  }
  iovec iov{out_.data() + out_sent_, out_.size() - out_sent_};
  return send_iov(&iov, 1);
}

// One sendmsg, carrying the descriptors still to go (they go with the
// first byte sent).
ssize_t Connection::send_once(iovec* iov, int count, int flags) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptors)];
  if (!fds_out_.empty()) {
    size_t bytes = sizeof(int) * fds_out_.size();
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(bytes);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(bytes);
    std::memcpy(CMSG_DATA(cmsg), fds_out_.data(), bytes);
  }
  ssize_t sent = sendmsg(fd_, &msg, kSendFlags | flags);
  if (sent > 0) {
    for (int fd : fds_out_) close(fd);
    fds_out_.clear();
  }
  return sent;
}

// The iovecs are the rest of out_ (if any) and then the caller's data.
bool Connection::send_iov(iovec* iov, int count) {
  bool from_buffer = has_pending_output() && iov[0].iov_base == out_.data() + out_sent_;
  while (count > 0) {
    ssize_t sent = send_once(iov, count, 0);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return fail(std::string("send: ") + strerror(errno));
      if (wait_writable()) continue;
      if (broken_) return false;
      // An interrupt: the rest of this message goes on into memory.
      for (int i = 0; i < count; ++i) {
        if (from_buffer && i == 0) continue;  // already there
        out_.append(iov[i].iov_base, iov[i].iov_len);
      }
      deferring_ = true;
      return true;
    }
    size_t left = static_cast<size_t>(sent);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      if (from_buffer) {
        out_sent_ += iov->iov_len;
        from_buffer = false;
      }
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
      if (from_buffer) out_sent_ += left;
    }
  }
  out_.clear(kKeepBytes);
  out_sent_ = 0;
  return true;
}

// Waits until the socket takes more; meanwhile takes in what the peer
// sends, as it may itself be blocked sending to us. False when an
// interrupt came (or the link failed).
bool Connection::wait_writable() {
  for (;;) {
    pollfd p{fd_, POLLOUT | POLLIN, 0};
    if (wait_fds(&p, 1, -1, interrupt_poll_) == WaitResult::Interrupted) return false;
    if (p.revents & POLLOUT) return true;
    if (p.revents & POLLIN) {
      size_t got = 0;
      if (!receive(in_.extend(kReadAhead), kReadAhead, &got)) {
        in_.resize_down(in_.size() - kReadAhead);
        return false;
      }
      in_.resize_down(in_.size() - kReadAhead + got);
      if (got == 0 && peer_closed_) return fail("the other side closed the connection");
      continue;
    }
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return fail("connection lost");
  }
}

bool Connection::flush() {
  if (broken_) return false;
  // (never the open chunk: its length is not known yet)
  size_t end = open_chunk_ == kNoChunk ? out_.size() : open_chunk_;
  while (out_sent_ < end) {
    iovec iov{out_.data() + out_sent_, end - out_sent_};
    ssize_t sent = send_once(&iov, 1, MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return fail(std::string("send: ") + strerror(errno));
    }
    out_sent_ += static_cast<size_t>(sent);
  }
  if (!has_pending_output()) {
    out_.clear(kKeepBytes);
    out_sent_ = 0;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Reading

// One recvmsg, always with room for descriptors: any sent to a reader
// without it would be lost. *got is 0 when nothing is there yet.
bool Connection::receive(char* dst, size_t capacity, size_t* got) {
  *got = 0;
  for (;;) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptors)];
    iovec iov{dst, capacity};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t rc = recvmsg(fd_, &msg, kReceiveFlags | MSG_DONTWAIT);
    if (rc < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return fail(std::string("recv: ") + strerror(errno));
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < n; ++i) {
        if (!BGPOOL_LINUX) os::set_flags(fds[i], false);
        fds_in_.push_back(fds[i]);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) return fail("descriptors sent with a message were lost");
    if (rc == 0) peer_closed_ = true;
    *got = static_cast<size_t>(rc);
    return true;
  }
}

// Receives more into the read-ahead buffer. False when nothing more can
// come now, *status saying why: Pending (not waiting), Interrupted, Failed.
bool Connection::receive_more(bool may_wait, Status* status) {
  if (in_used_ == in_.size()) {
    in_.clear(kKeepBytes);
    in_used_ = 0;
  } else if (in_used_ > kReadAhead) {
    in_.drop_front(in_used_);
    in_used_ = 0;
  }
  for (;;) {
    if (peer_closed_) {
      *status = failed(reading_ || buffered() ? "the other side closed the connection in the middle of a message"
                                              : "the other side closed the connection");
      return false;
    }
    size_t got = 0;
    bool ok = receive(in_.extend(kReadAhead), kReadAhead, &got);
    in_.resize_down(in_.size() - kReadAhead + got);
    if (!ok) {
      *status = Status::Failed;
      return false;
    }
    if (got > 0) return true;
    if (peer_closed_) continue;
    if (!may_wait) {
      *status = Status::Pending;
      return false;
    }
    pollfd p{fd_, POLLIN, 0};
    if (wait_fds(&p, 1, -1, interrupt_poll_) == WaitResult::Interrupted) {
      *status = Status::Interrupted;
      return false;
    }
  }
}

void Connection::close_message_fds() {
  for (int fd : message_fds_)
    if (fd >= 0) close(fd);
  message_fds_.clear();
}

// Advances the message under way as far as the bytes at hand (or, with
// may_wait, the bytes to come) allow. `keep`: collect its payload.
Connection::Status Connection::step_read(bool may_wait, bool keep) {
  if (broken_) return Status::Failed;
  for (;;) {
    if (state_ == ReadState::Payload) {
      if (chunk_left_ == 0) {
        state_ = ReadState::ChunkLength;
        continue;
      }
      size_t have = buffered();
      if (have == 0 && keep && chunk_left_ >= kDirectRead) {
        // straight from the socket into the message
        size_t want = static_cast<size_t>(std::min<uint64_t>(chunk_left_, size_t(1) << 30));
        size_t got = 0;
        bool ok = receive(message_.extend(want), want, &got);
        message_.resize_down(message_.size() - want + got);
        if (!ok) return Status::Failed;
        chunk_left_ -= got;
        if (got > 0) continue;
      } else if (have > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, have));
        if (keep) message_.append(in_.data() + in_used_, n);
        in_used_ += n;
        chunk_left_ -= n;
        continue;
      }
      Status status;
      if (!receive_more(may_wait, &status)) return status;
      continue;
    }
    if (buffered() < sizeof(uint64_t)) {
      Status status;
      if (!receive_more(may_wait, &status)) return status;
      continue;
    }
    uint64_t word;
    std::memcpy(&word, in_.data() + in_used_, sizeof word);
    in_used_ += sizeof word;
    if (state_ == ReadState::Trailer) {
      // The descriptors came with the message's bytes, so they are here.
      if (fds_in_.size() < word) return failed("a message came without its descriptors");
      close_message_fds();
      message_fds_.assign(fds_in_.begin(), fds_in_.begin() + word);
      fds_in_.erase(fds_in_.begin(), fds_in_.begin() + word);
      reading_ = false;
      state_ = ReadState::ChunkLength;
      if (aborted_) {
        release_message();
        return Status::Aborted;
      }
      ++read_count_;
      return Status::Complete;
    }
    if (!reading_) {  // a new message
      close_message_fds();
      message_.clear(kKeepBytes);
      reading_ = true;
    }
    if (word == kEndChunk || word == kAbortChunk) {
      aborted_ = word == kAbortChunk;
      state_ = ReadState::Trailer;
      continue;
    }
    if (word > kMaxChunk) return failed("received a malformed message");
    chunk_left_ = word;
    state_ = ReadState::Payload;
  }
}

Connection::Status Connection::read_whole(bool may_wait) {
  if (message_ready_) return Status::Complete;
  for (;;) {
    Status status = step_read(may_wait, true);
    message_ready_ = status == Status::Complete;
    if (status != Status::Aborted) return status;
  }
}

Connection::Status Connection::discard(bool may_wait) {
  if (message_ready_) {
    release_message();
    return Status::Complete;
  }
  for (;;) {
    Status status = step_read(may_wait, false);
    if (status == Status::Complete) release_message();
    if (status != Status::Aborted) return status;
  }
}

int Connection::take_descriptor(size_t index) {
  if (index >= message_fds_.size()) return -1;
  int fd = message_fds_[index];
  message_fds_[index] = -1;
  return fd;
}

void Connection::release_message() {
  close_message_fds();
  message_.clear(kKeepBytes);
  message_ready_ = false;
}

// ---------------------------------------------------------------------------
// The handshake

bool Connection::write_raw(const void* data, size_t n) {
  if (broken_) return false;
  iovec iov{const_cast<void*>(data), n};
  return send_iov(&iov, 1) && !deferring_;
}

// A negative timeout waits as long as it takes.
bool Connection::read_raw(void* dst, size_t n, double timeout_seconds) {
  double deadline = timeout_seconds < 0 ? -1 : monotonic_seconds() + timeout_seconds;
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    if (buffered()) {
      size_t m = std::min(n, buffered());
      std::memcpy(out, in_.data() + in_used_, m);
      in_used_ += m;
      out += m;
      n -= m;
      continue;
    }
    size_t got = 0;
    if (!receive(out, n, &got)) return false;
    if (peer_closed_ && got == 0) return fail("the other side closed the connection");
    out += got;
    n -= got;
    if (n == 0) break;
    pollfd p{fd_, POLLIN, 0};
    WaitResult result = wait_fds(&p, 1, deadline, interrupt_poll_);
    if (result == WaitResult::TimedOut) return fail("timed out");
    if (result == WaitResult::Interrupted) return fail("interrupted");
  }
  return true;
}

}  // namespace bgpool
