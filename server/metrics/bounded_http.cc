#include "server/metrics/bounded_http.h"

#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "base/mutex.h"

namespace model_server::server::metrics {
namespace {

using Clock = std::chrono::steady_clock;

// A connection's stream under one deadline and a byte budget for reading (httplib's
// SocketStream has neither: its timeouts restart with every read).
class BoundedStream final : public httplib::Stream {
 public:
  BoundedStream(int fd, Clock::time_point deadline, size_t max_read_bytes)
      : fd_(fd), deadline_(deadline), read_budget_(max_read_bytes) {}

  bool is_readable() const override { return begin_ < end_ || Wait(POLLIN); }
  bool is_writable() const override { return Wait(POLLOUT); }

  ssize_t read(char* ptr, size_t size) override {
    if (begin_ == end_) {
      // httplib reads the request line and headers a byte at a time: buffer the socket.
      if (read_budget_ == 0 || !Wait(POLLIN)) return -1;
      const ssize_t received =
          Retry([&] { return recv(fd_, buffer_, std::min(sizeof(buffer_), read_budget_), 0); });
      if (received <= 0) return received;
      read_budget_ -= static_cast<size_t>(received);
      begin_ = 0;
      end_ = static_cast<size_t>(received);
    }
    const size_t n = std::min(size, end_ - begin_);
    memcpy(ptr, buffer_ + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!Wait(POLLOUT)) return -1;
    return Retry([&] { return send(fd_, ptr, size, MSG_NOSIGNAL); });
  }

  // Only used to fill Request::remote_addr, which the metrics handler does not read.
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = 0;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = 0;
  }
  socket_t socket() const override { return fd_; }

 private:
  template <typename Call>
  static ssize_t Retry(Call call) {
    ssize_t result;
    do {
      result = call();
    } while (result < 0 && errno == EINTR);
    return result;
  }

  // Whether the socket is ready for `events` before the deadline.
  bool Wait(short events) const {
    for (;;) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
      if (left <= 0) return false;
      pollfd fd{fd_, events, 0};
      const int ready = poll(&fd, 1, static_cast<int>(left));
      if (ready < 0 && errno == EINTR) continue;
      return ready > 0;
    }
  }

  const int fd_;
  const Clock::time_point deadline_;
  size_t read_budget_;
  char buffer_[4096];
  size_t begin_ = 0;
  size_t end_ = 0;
};

// Set on the listener thread while it closes a connection that found the queue full.
thread_local bool shedding = false;

// httplib's listener hands each accepted connection to a TaskQueue as a closure that serves and
// closes it. This one runs them on worker threads it starts as they are needed, up to
// max_threads; a closure that finds max_queued waiting runs at once on the listener thread with
// `shedding` set, so its connection is only closed.
class GrowingThreadPool final : public httplib::TaskQueue {
 public:
  GrowingThreadPool(size_t max_threads, size_t max_queued)
      : max_threads_(std::max<size_t>(1, max_threads)), max_queued_(max_queued) {}

  void enqueue(std::function<void()> fn) override {
    {
      base::MutexLock lock(mutex_);
      if (jobs_.size() >= idle_ && threads_.size() < max_threads_) {
        ++idle_;  // counted before it runs, so that the next job does not start another
        threads_.emplace_back([this] { Work(); });
      }
      if (jobs_.size() < idle_ + max_queued_) {  // at most max_queued_ wait for a worker
        jobs_.push_back(std::move(fn));
        wake_.Signal();
        return;
      }
    }
    shedding = true;
    fn();
    shedding = false;
  }

  void shutdown() override {
    std::vector<std::thread> threads;
    {
      base::MutexLock lock(mutex_);
      stopping_ = true;
      threads.swap(threads_);
    }
    wake_.SignalAll();
    for (std::thread& thread : threads) thread.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> job;
      {
        base::MutexLock lock(mutex_);
        while (!stopping_ && jobs_.empty()) wake_.Wait(mutex_);
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
        --idle_;
        // Once stopping, connections still waiting are closed unserved: stop() must not take
        // a deadline per queued connection.
        shedding = stopping_;
      }
      job();
      base::MutexLock lock(mutex_);
      ++idle_;
    }
  }

  const size_t max_threads_;
  const size_t max_queued_;
  base::Mutex mutex_;
  base::CondVar wake_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mutex_);
  size_t idle_ ABSL_GUARDED_BY(mutex_) = 0;  // workers waiting for a job
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mutex_);
};

class BoundedHttpServer final : public httplib::Server {
 public:
  bool WidenListenBacklog() { return ::listen(svr_sock_, limits_.listen_backlog) == 0; }

  explicit BoundedHttpServer(const HttpLimits& limits) : limits_(limits) {
    new_task_queue = [threads = limits.max_threads, queue = limits.queue] {
      return new GrowingThreadPool(threads, queue);
    };
    // Not consulted by process_and_close_socket below, which bounds the whole exchange; set so
    // that no code path of httplib's can wait longer than the deadline either.
    set_read_timeout(limits.deadline);
    set_write_timeout(limits.deadline);
    set_keep_alive_max_count(1);
    set_keep_alive_timeout(1);
    set_payload_max_length(limits.max_request_bytes);
  }

 private:
  // httplib::Server's own (private virtual, overridden as its SSLServer does): one request, under
  // one deadline and a read budget, then the connection is closed.
  bool process_and_close_socket(socket_t socket) override {
    bool served = false;
    if (!shedding) {
      BoundedStream stream(socket, Clock::now() + limits_.deadline, limits_.max_request_bytes);
      bool connection_closed = false;
      served = process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
    }
    ::shutdown(socket, SHUT_RDWR);
    ::close(socket);
    return served;
  }

  const HttpLimits limits_;
};

}  // namespace

std::unique_ptr<httplib::Server> MakeBoundedHttpServer(const HttpLimits& limits) {
  return std::make_unique<BoundedHttpServer>(limits);
}

bool WidenListenBacklog(httplib::Server& server) {
  // Calling listen() again on a listening socket sets its backlog anew.
  return static_cast<BoundedHttpServer&>(server).WidenListenBacklog();
}

}  // namespace model_server::server::metrics
