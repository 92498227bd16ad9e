#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

namespace httplib {
class Server;
}  // namespace httplib

namespace model_server::server::metrics {

// What HTTP clients of the metrics endpoint can hold, whatever they send (docs/SECURITY.md).
struct HttpLimits {
  // Connections served at the same time, each by a worker thread of its own; workers start as
  // connections need them (a scrape needs one) and stay. Slow clients delay a scrape only once
  // they hold every one of them.
  size_t max_threads = 128;
  // Accepted connections waiting for a worker; a connection arriving when this many wait is
  // closed at once, so the endpoint holds at most max_threads + queue file descriptors.
  size_t queue = 128;
  // A connection carries one request (Connection: close); reading it and writing the answer
  // must end within this, however slowly the client sends or reads (slowloris).
  std::chrono::milliseconds deadline{3000};
  // Bytes read from a connection at most (request line, headers and body): a GET is far
  // smaller; this bounds what endless headers can make the server store.
  size_t max_request_bytes = 16 * 1024;
  // Connections the kernel completes and holds until they are accepted (capped by
  // net.core.somaxconn). httplib 0.11 listens with 5: a burst of connections overflows that,
  // and a scraper's connection then waits for SYN retransmits (1 s, 3 s, ...).
  int listen_backlog = 1024;
};

// An httplib::Server (cpp-httplib 0.11) that serves under `limits`. httplib's own timeouts are
// per read or write, so a client sending a byte every few seconds would hold a worker as long as
// it likes; here one deadline covers the whole exchange. Routes are added by the caller.
std::unique_ptr<httplib::Server> MakeBoundedHttpServer(const HttpLimits& limits);

// Sets the listen backlog of `server`, made by MakeBoundedHttpServer and bound
// (bind_to_port), to its limits' listen_backlog. False when listen() fails.
bool WidenListenBacklog(httplib::Server& server);

}  // namespace model_server::server::metrics
