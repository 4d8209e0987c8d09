// Framed, non-blocking message transport over a Unix socket.
#include "connection.h"

#include "clock.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bgpool {

namespace {

// Writes below this size are gathered in a buffer; larger ones (vector data
// handed over by the serializer, 64 KiB at a time) go to the socket from
// where they lie.
constexpr size_t kDirectWrite = 16 * 1024;
constexpr size_t kOutBuffer = 64 * 1024;
// Reads this large go straight into the destination.
constexpr size_t kDirectRead = 64 * 1024;
constexpr size_t kReadAhead = 256 * 1024;
constexpr double kWaitSlice = 0.1;
constexpr uint64_t kMaxChunk = uint64_t(1) << 32;
constexpr size_t kMaxFds = 253;  // the kernel's limit per message

}  // namespace

Connection::Connection(int fd, InterruptCheck check) : fd_(fd), check_(check) {
  out_.reserve(kOutBuffer);
}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
  for (int fd : fds_in_) close(fd);
}

int Connection::take_fd() {
  if (fds_in_.empty()) return -1;
  int fd = fds_in_.front();
  fds_in_.erase(fds_in_.begin());
  return fd;
}

void Connection::mark_broken(const std::string& why) {
  if (!broken_) failure_ = why;
  broken_ = true;
}

bool Connection::fail(const std::string& why) {
  mark_broken(why);
  return false;
}

// Waits for `events` in short slices so an interrupt is seen promptly.
bool Connection::wait(short events, double timeout_seconds, short* revents) {
  double deadline = timeout_seconds < 0 ? -1 : monotonic_seconds() + timeout_seconds;
  for (;;) {
    pollfd p{fd_, events, 0};
    int rc = poll(&p, 1, static_cast<int>(kWaitSlice * 1000));
    if (rc > 0) {
      *revents = p.revents;
      return true;
    }
    if (rc < 0 && errno != EINTR) return fail(std::string("poll: ") + strerror(errno));
    if (check_ && check_()) {
      interrupted_ = true;
      return fail("interrupted");
    }
    if (deadline >= 0 && monotonic_seconds() > deadline) return fail("timed out");
  }
}

bool Connection::send_all(iovec* iov, int count) {
  if (broken_) return false;
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    std::vector<char> control;
    if (!fds_out_.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * fds_out_.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds_out_.size());
      std::memcpy(CMSG_DATA(cmsg), fds_out_.data(), sizeof(int) * fds_out_.size());
    }
    ssize_t sent = sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (sent > 0) fds_out_.clear();  // they went with the first byte
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return fail(std::string("send: ") + strerror(errno));
      // The peer may itself be blocked sending to us: keep taking its bytes
      // so that neither side waits for the other forever.
      short revents = 0;
      if (!wait(POLLOUT | POLLIN, -1, &revents)) return false;
      if ((revents & POLLIN) && !take_in_available()) return false;
      if (revents & (POLLERR | POLLNVAL)) return fail("connection lost");
      continue;
    }
    size_t left = static_cast<size_t>(sent);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

// Sends the buffered bytes as one chunk, then `data` as another (if any),
// then the terminator (if `last`), in one system call where the socket allows.
bool Connection::send_chunks(const void* data, size_t n, bool last) {
  uint64_t buffered_len = out_.size(), data_len = n, end = 0;
  iovec iov[5];
  int count = 0;
  if (buffered_len) {
    iov[count++] = {&buffered_len, sizeof buffered_len};
    iov[count++] = {out_.data(), out_.size()};
  }
  if (data_len) {
    iov[count++] = {&data_len, sizeof data_len};
    iov[count++] = {const_cast<void*>(data), n};
  }
  if (last) iov[count++] = {&end, sizeof end};
  bool ok = send_all(iov, count);
  out_.clear();
  return ok;
}

bool Connection::put(const void* data, size_t n) {
  if (broken_) return false;
  if (n >= kDirectWrite) return send_chunks(data, n, false);
  if (out_.size() + n > kOutBuffer && !send_chunks(nullptr, 0, false)) return false;
  const char* bytes = static_cast<const char*>(data);
  out_.insert(out_.end(), bytes, bytes + n);
  return true;
}

bool Connection::end_message() {
  if (broken_) return false;
  return send_chunks(nullptr, 0, true);
}

void Connection::compact_input() {
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
    // Don't keep a large buffer after a large message was taken in.
    if (in_.capacity() > 4 * kReadAhead) std::vector<char>().swap(in_);
  }
}

// One non-blocking read into dst; *got is 0 when nothing is available yet.
bool Connection::receive_some(char* dst, size_t capacity, size_t* got) {
  *got = 0;
  for (;;) {
    // Always with room for passed fds: fds sent to a reader without it
    // would be lost (and leak in the kernel's queue).
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{dst, capacity};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t rc = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (rc > 0) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* fds = reinterpret_cast<const int*>(CMSG_DATA(c));
        fds_in_.insert(fds_in_.end(), fds, fds + n);
      }
    }
    if (rc > 0) {
      *got = static_cast<size_t>(rc);
      return true;
    }
    if (rc == 0) {
      peer_closed_ = true;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return fail(std::string("recv: ") + strerror(errno));
  }
}

// Replaces the (fully read) input buffer with what the socket holds now.
bool Connection::refill(size_t* got) {
  in_.resize(kReadAhead);
  in_pos_ = 0;
  bool ok = receive_some(in_.data(), kReadAhead, got);
  in_.resize(*got);
  return ok;
}

// Moves whatever the socket holds now into the input buffer.
bool Connection::take_in_available() {
  for (;;) {
    size_t old = in_.size();
    in_.resize(old + kReadAhead);
    size_t got = 0;
    bool ok = receive_some(in_.data() + old, kReadAhead, &got);
    in_.resize(old + got);
    if (!ok) return false;
    if (got < kReadAhead) return true;
  }
}

// Reads exactly n bytes of the raw stream: first what is buffered, then
// large remainders straight into dst, small ones through the buffer.
bool Connection::read_stream(void* dst, size_t n) {
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    if (has_buffered_input()) {
      size_t m = std::min(n, in_.size() - in_pos_);
      std::memcpy(out, in_.data() + in_pos_, m);
      in_pos_ += m;
      out += m;
      n -= m;
      compact_input();
      continue;
    }
    if (peer_closed_) return fail("the other side closed the connection");
    size_t got = 0;
    if (n >= kDirectRead) {
      if (!receive_some(out, n, &got)) return false;
      out += got;
      n -= got;
    } else if (!refill(&got)) {
      return false;
    }
    if (got == 0 && !peer_closed_) {
      short revents = 0;
      if (!wait(POLLIN, -1, &revents)) return false;
    }
  }
  return true;
}

bool Connection::read_chunk_header() {
  uint64_t len = 0;
  if (!read_stream(&len, sizeof len)) return false;
  // The serializer never hands over more than a string's 2^31 bytes at once.
  if (len > kMaxChunk) return fail("received a malformed message");
  chunk_left_ = len;
  message_ended_ = len == 0;
  return true;
}

bool Connection::begin_message() {
  if (broken_) return false;
  if (!has_buffered_input()) {
    // Tell a clean end of stream (the peer exited between messages) apart
    // from one in the middle of a message.
    size_t got = 0;
    if (!refill(&got)) return false;
    if (got == 0 && peer_closed_) return fail("the other side closed the connection");
  }
  reading_ = true;
  if (!read_chunk_header()) return false;
  if (message_ended_) return fail("received an empty message");
  return true;
}

bool Connection::get(void* dst, size_t n) {
  if (broken_) return false;
  if (!reading_) return fail("read outside a message");
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    if (chunk_left_ == 0) {
      if (!read_chunk_header()) return false;
      if (message_ended_) return fail("message ended early");
    }
    size_t m = static_cast<size_t>(std::min<uint64_t>(n, chunk_left_));
    if (!read_stream(out, m)) return false;
    chunk_left_ -= m;
    out += m;
    n -= m;
  }
  return true;
}

bool Connection::end_read() {
  if (broken_) return false;
  reading_ = false;
  if (chunk_left_ != 0) return fail("message longer than its content");
  if (!message_ended_ && !read_chunk_header()) return false;
  if (!message_ended_) return fail("message longer than its content");
  message_ended_ = false;
  return true;
}

bool Connection::write_raw(const void* data, size_t n) {
  iovec iov{const_cast<void*>(data), n};
  return send_all(&iov, 1);
}

// A negative timeout waits as long as it takes.
bool Connection::read_raw(void* dst, size_t n, double timeout_seconds) {
  double deadline = monotonic_seconds() + timeout_seconds;
  char* out = static_cast<char*>(dst);
  while (n > 0) {
    size_t got = 0;
    if (!receive_some(out, n, &got)) return false;
    if (peer_closed_ && got == 0) return fail("the other side closed the connection");
    out += got;
    n -= got;
    if (n == 0) break;
    double left = -1;
    if (timeout_seconds >= 0) {
      left = deadline - monotonic_seconds();
      if (left <= 0) return fail("timed out");
    }
    short revents = 0;
    if (!wait(POLLIN, left, &revents)) return false;
  }
  return true;
}

}  // namespace bgpool
