#include "server/server_sockets.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>

namespace model_server::server {
namespace {

bool IsInet(const sockaddr_storage& address) {
  return address.ss_family == AF_INET || address.ss_family == AF_INET6;
}

in_port_t Port(const sockaddr_storage& address) {
  return address.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in&>(address).sin_port
                                      : reinterpret_cast<const sockaddr_in6&>(address).sin6_port;
}

}  // namespace

bool ServerSockets::Scan(const std::function<void(const Socket&, bool listening)>& visit) {
  DIR* table = opendir("/proc/self/fd");
  if (table == nullptr) return false;
  const int own = dirfd(table);
  while (const dirent* entry = readdir(table)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    Socket socket;
    socket.fd = static_cast<int>(fd);
    struct stat status {};
    if (fstat(socket.fd, &status) != 0 || !S_ISSOCK(status.st_mode)) continue;
    socket.inode = status.st_ino;
    int type = 0;
    int listening = 0;
    socklen_t length = sizeof(type);
    if (getsockopt(socket.fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_STREAM) {
      continue;
    }
    length = sizeof(listening);
    if (getsockopt(socket.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0) continue;
    socket.local_length = sizeof(socket.local);
    if (getsockname(socket.fd, reinterpret_cast<sockaddr*>(&socket.local), &socket.local_length) !=
        0) {
      continue;
    }
    visit(socket, listening != 0);
  }
  closedir(table);
  return true;
}

bool ServerSockets::Same(const Socket& socket) {
  struct stat status {};
  return fstat(socket.fd, &status) == 0 && S_ISSOCK(status.st_mode) &&
         status.st_ino == socket.inode;
}

std::set<ino_t> ServerSockets::ListeningNow() {
  std::set<ino_t> inodes;
  Scan([&inodes](const Socket& socket, bool listening) {
    if (listening) inodes.insert(socket.inode);
  });
  return inodes;
}

ServerSockets ServerSockets::Find(const std::set<ino_t>& before, int port) {
  ServerSockets found;
  Scan([&](const Socket& socket, bool listening) {
    if (!listening || before.count(socket.inode) != 0) return;
    if (IsInet(socket.local) && ntohs(Port(socket.local)) != port) return;
    found.listeners_.push_back(socket);
  });
  return found;
}

bool ServerSockets::Accepted(const Socket& connection) const {
  for (const Socket& listener : listeners_) {
    if (IsInet(listener.local) && IsInet(connection.local)) {
      // A dual-stack listener's IPv4 connections have IPv4-mapped IPv6 addresses: the port
      // tells. No other socket of this process has the port locally while the listener holds it.
      if (Port(listener.local) == Port(connection.local)) return true;
    } else if (listener.local.ss_family == AF_UNIX && connection.local.ss_family == AF_UNIX) {
      // Named (an unnamed socket's address is the family alone): the same path.
      if (listener.local_length > sizeof(sa_family_t) &&
          connection.local_length == listener.local_length &&
          std::memcmp(&connection.local, &listener.local, listener.local_length) == 0) {
        return true;
      }
    }
  }
  return false;
}

std::vector<ServerSockets::Socket> ServerSockets::Connections() const {
  std::vector<Socket> connections;
  Scan([&](const Socket& socket, bool listening) {
    if (listening || !Accepted(socket)) return;
    // A stopped listener listens no more, and has the port too.
    for (const Socket& listener : listeners_) {
      if (listener.inode == socket.inode) return;
    }
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof(peer);
    if (getpeername(socket.fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) return;
    connections.push_back(socket);
  });
  return connections;
}

int ServerSockets::StopListening() const {
  int stopped = 0;
  for (const Socket& listener : listeners_) {
    if (Same(listener) && shutdown(listener.fd, SHUT_RD) == 0) ++stopped;
  }
  return stopped;
}

int64_t ServerSockets::UnacknowledgedBytes() const {
  int64_t bytes = 0;
  for (const Socket& connection : Connections()) {
    int queued = 0;
    if (ioctl(connection.fd, SIOCOUTQ, &queued) == 0 && Same(connection)) bytes += queued;
  }
  return bytes;
}

int ServerSockets::EndConnections() const {
  int ended = 0;
  for (const Socket& connection : Connections()) {
    if (Same(connection) && shutdown(connection.fd, SHUT_WR) == 0) ++ended;
  }
  return ended;
}

}  // namespace model_server::server
