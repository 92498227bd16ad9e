#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <set>
#include <vector>

namespace model_server::server {

// The sockets of one gRPC server, found in the process's file table (/proc/self/fd, Linux):
// its listening sockets, and the connections accepted on them.
//
// Why: gRPC 1.51 has no API to stop accepting connections or to close them other than
// Server::Shutdown, and every stream that reaches the server once that has started is dropped
// without a status (its client sees CANCELLED). A client stops sending on a connection only once
// it has read the GOAWAY, so with clients that resend at once there is no moment at which
// Shutdown drops nothing. The drain (ModelServer::Shutdown) stops the listeners and ends the
// connections here first, at the socket, where a client sees a refused or closed connection
// (UNAVAILABLE, retryable) instead; gRPC's Shutdown then finds no client left to drop.
//
// The sockets stay gRPC's: they are only shut down (shutdown(2)), never closed, and a file
// descriptor is acted on only while it is still the socket found (same inode). Thread-safe
// (const after construction).
class ServerSockets {
 public:
  // Inodes of the stream sockets that listen now, for Find: call it just before the server
  // opens its own.
  static std::set<ino_t> ListeningNow();
  // The stream sockets that listen now and are not in `before`: the server's own. A TCP one
  // must also listen on `port` (the server's), in case another thread opened one meanwhile.
  static ServerSockets Find(const std::set<ino_t>& before, int port);

  ServerSockets() = default;

  // Listening sockets found.
  size_t listeners() const { return listeners_.size(); }

  // Stops accepting connections (shutdown(SHUT_RD) on each listener): a new connection is
  // refused, those not yet accepted are reset. gRPC's accept loop fails on it and stops (gRPC
  // logs "Failed accept4: Invalid argument"). Returns how many listeners were stopped.
  int StopListening() const;

  // Bytes the kernel still holds for the clients of the connections accepted on the listeners:
  // not yet sent, or sent and not yet acknowledged (SIOCOUTQ). Zero means every byte gRPC wrote
  // has reached the clients' machines.
  int64_t UnacknowledgedBytes() const;

  // Ends the server's half of every connection accepted on the listeners (shutdown(SHUT_WR)):
  // the kernel sends what it holds, then FIN. A client then sees the connection closed, and any
  // call on it not answered yet ends UNAVAILABLE ("Socket closed"); later writes by gRPC fail,
  // and gRPC closes the connection. Returns how many connections were ended.
  int EndConnections() const;

 private:
  struct Socket {
    int fd = -1;
    ino_t inode = 0;
    sockaddr_storage local{};
    socklen_t local_length = 0;
  };

  // Calls `visit` with each stream socket of the process and whether it listens. Returns false
  // when the file table cannot be read.
  static bool Scan(const std::function<void(const Socket&, bool listening)>& visit);
  // Whether `socket.fd` is still that socket.
  static bool Same(const Socket& socket);

  // Whether `connection`'s local address is a listener's (same port, or same Unix path).
  bool Accepted(const Socket& connection) const;
  // The connections accepted on the listeners, now.
  std::vector<Socket> Connections() const;

  std::vector<Socket> listeners_;
};

}  // namespace model_server::server
