// ServerSockets against plain sockets: which are found, and what stopping a listener and ending
// a connection does to a client, over TCP and Unix sockets.

#include "server/server_sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace model_server::server {
namespace {

using namespace std::chrono_literals;

// A socket closed on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// A listening socket on loopback (TCP, a port of its own) or at a Unix path.
struct Listener {
  Fd fd;
  sockaddr_storage address{};
  socklen_t length = 0;
};

Listener ListenTcp() {
  Listener listener{Fd(socket(AF_INET, SOCK_STREAM, 0))};
  REQUIRE(listener.fd.get() >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listener.fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(listen(listener.fd.get(), 16) == 0);
  listener.length = sizeof(listener.address);
  REQUIRE(getsockname(listener.fd.get(), reinterpret_cast<sockaddr*>(&listener.address),
                      &listener.length) == 0);
  return listener;
}

Listener ListenUnix(const std::string& path) {
  unlink(path.c_str());
  Listener listener{Fd(socket(AF_UNIX, SOCK_STREAM, 0))};
  REQUIRE(listener.fd.get() >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(address.sun_path));
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  REQUIRE(bind(listener.fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(listen(listener.fd.get(), 16) == 0);
  std::memcpy(&listener.address, &address, sizeof(address));
  listener.length = sizeof(address);
  return listener;
}

// The TCP port `listener` listens on (0 for a Unix socket).
int PortOf(const Listener& listener) {
  if (listener.address.ss_family != AF_INET) return 0;
  return ntohs(reinterpret_cast<const sockaddr_in&>(listener.address).sin_port);
}

// A client's connection to `listener`, or an invalid Fd with errno set.
Fd Connect(const Listener& listener) {
  Fd client(socket(listener.address.ss_family, SOCK_STREAM, 0));
  REQUIRE(client.get() >= 0);
  if (connect(client.get(), reinterpret_cast<const sockaddr*>(&listener.address),
              listener.length) != 0) {
    return Fd();
  }
  return client;
}

// The server's side of a connection made to `listener`.
Fd Accept(const Listener& listener) {
  Fd accepted(accept(listener.fd.get(), nullptr, nullptr));
  REQUIRE(accepted.get() >= 0);
  return accepted;
}

// Bytes `fd` reads, with 0 for the end of the stream and -1 when nothing comes within 2 s.
ssize_t ReadWithin2s(int fd) {
  timeval timeout{2, 0};
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) == 0);
  char buffer[4096];
  return read(fd, buffer, sizeof(buffer));
}

void Write(int fd, const std::string& text) {
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

TEST_CASE("ServerSockets finds the server's listener, and its connections only",
          "[server_sockets]") {
  const Listener before = ListenTcp();
  const std::set<ino_t> listening = ServerSockets::ListeningNow();
  const Listener ours = ListenTcp();
  const Listener another = ListenTcp();  // opened meanwhile by another thread, on another port
  const ServerSockets sockets = ServerSockets::Find(listening, PortOf(ours));
  REQUIRE(sockets.listeners() == 1);

  // Connections to the other listeners are not the server's: ending the server's connections
  // leaves them open.
  const Fd before_client = Connect(before);
  const Fd before_accepted = Accept(before);
  const Fd another_client = Connect(another);
  const Fd another_accepted = Accept(another);
  const Fd client = Connect(ours);
  const Fd accepted = Accept(ours);
  CHECK(sockets.EndConnections() == 1);
  CHECK(ReadWithin2s(client.get()) == 0);  // FIN: the connection has ended
  Write(before_accepted.get(), "still open");
  CHECK(ReadWithin2s(before_client.get()) == 10);
  Write(another_accepted.get(), "still open");
  CHECK(ReadWithin2s(another_client.get()) == 10);
  // The server's end still reads what the client sends (only its sending half has ended).
  Write(client.get(), "late");
  CHECK(ReadWithin2s(accepted.get()) == 4);
}

TEST_CASE("ServerSockets: a stopped listener refuses new connections; open ones carry on",
          "[server_sockets]") {
  const std::set<ino_t> listening = ServerSockets::ListeningNow();
  const Listener listener = ListenTcp();
  const ServerSockets sockets = ServerSockets::Find(listening, PortOf(listener));
  const Fd client = Connect(listener);
  const Fd accepted = Accept(listener);
  CHECK(sockets.StopListening() == 1);
  const Fd refused = Connect(listener);
  CHECK(refused.get() < 0);
  CHECK(errno == ECONNREFUSED);
  // The stopped listener is not taken for a connection (it has the port, and no peer).
  Write(accepted.get(), "reply");
  CHECK(ReadWithin2s(client.get()) == 5);
  CHECK(sockets.UnacknowledgedBytes() == 0);
  CHECK(sockets.EndConnections() == 1);
  CHECK(ReadWithin2s(client.get()) == 0);
}

TEST_CASE("ServerSockets counts the bytes a client has not taken yet", "[server_sockets]") {
  const std::set<ino_t> listening = ServerSockets::ListeningNow();
  const Listener listener = ListenTcp();
  const ServerSockets sockets = ServerSockets::Find(listening, PortOf(listener));
  const Fd client = Connect(listener);
  const Fd accepted = Accept(listener);
  // A client that reads nothing: once its receive buffer is full, the server's kernel holds
  // the rest (unsent, so unacknowledged).
  const int buffer_bytes = 64 * 1024;
  REQUIRE(setsockopt(client.get(), SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof(buffer_bytes)) ==
          0);
  REQUIRE(setsockopt(accepted.get(), SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof(buffer_bytes)) ==
          0);
  REQUIRE(fcntl(accepted.get(), F_SETFL, O_NONBLOCK) == 0);
  const std::string chunk(64 * 1024, 'x');
  int64_t written = 0;
  while (true) {
    const ssize_t n = write(accepted.get(), chunk.data(), chunk.size());
    if (n < 0) break;
    written += n;
  }
  REQUIRE(errno == EAGAIN);
  CHECK(sockets.UnacknowledgedBytes() > 0);
  // Once the client has read everything, nothing is left.
  timeval timeout{2, 0};
  REQUIRE(setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) == 0);
  int64_t read_bytes = 0;
  while (read_bytes < written) {
    char buffer[65536];
    const ssize_t n = read(client.get(), buffer, sizeof(buffer));
    if (n <= 0) break;
    read_bytes += n;
  }
  REQUIRE(read_bytes == written);
  CHECK(sockets.UnacknowledgedBytes() == 0);
}

TEST_CASE("ServerSockets works on Unix sockets", "[server_sockets]") {
  const std::string path = "/tmp/server_sockets_test." + std::to_string(getpid()) + ".sock";
  const std::set<ino_t> listening = ServerSockets::ListeningNow();
  const Listener listener = ListenUnix(path);
  const ServerSockets sockets = ServerSockets::Find(listening, 0);
  REQUIRE(sockets.listeners() == 1);
  const Fd client = Connect(listener);
  const Fd accepted = Accept(listener);
  CHECK(sockets.StopListening() == 1);
  const Fd refused = Connect(listener);
  CHECK(refused.get() < 0);
  CHECK(errno == ECONNREFUSED);
  CHECK(sockets.EndConnections() == 1);
  CHECK(ReadWithin2s(client.get()) == 0);
  unlink(path.c_str());
}

}  // namespace
}  // namespace model_server::server
