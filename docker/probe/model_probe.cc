// model_probe: asks a server's standard grpc.health.v1.Health service whether a service is
// SERVING. Exit status 0 iff it is; 1 if it answered anything else or could not be reached in
// time; 2 on a usage error. Meant for container HEALTHCHECKs and scripts, e.g.
//   model_probe --address 127.0.0.1:13000 --service modelservice --timeout-ms 2000
// Deliberately free of flag libraries and logging so it stays small and starts fast.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "protos/health.grpc.pb.h"

namespace {

constexpr const char* kUsage =
    "usage: model_probe [--address HOST:PORT] [--service NAME] [--timeout-ms N]\n"
    "  --address     server to ask (default 127.0.0.1:$PORT_INTERNAL, else 127.0.0.1:13000)\n"
    "  --service     health service name; \"\" is the whole server (default \"\")\n"
    "  --timeout-ms  deadline for connecting and answering (default 2000)\n"
    "Exits 0 iff the server reports SERVING.\n";

struct ProbeFlags {
  std::string address;
  std::string service;
  long timeout_ms = 2000;
};

// Parses argv into flags; returns false (after printing why) on a usage error.
bool ParseFlags(int argc, char** argv, ProbeFlags& flags) {
  const char* port = std::getenv("PORT_INTERNAL");
  flags.address = std::string("127.0.0.1:") + (port != nullptr && *port != '\0' ? port : "13000");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    // Accept both "--flag value" and "--flag=value".
    std::string name = arg;
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name != "--address" && name != "--service" && name != "--timeout-ms") {
      std::cerr << "model_probe: unknown argument " << arg << "\n" << kUsage;
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::cerr << "model_probe: " << name << " needs a value\n" << kUsage;
        return false;
      }
      value = argv[++i];
    }
    if (name == "--address") {
      flags.address = value;
    } else if (name == "--service") {
      flags.service = value;
    } else {
      char* end = nullptr;
      flags.timeout_ms = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || flags.timeout_ms <= 0) {
        std::cerr << "model_probe: --timeout-ms needs a positive integer, got " << value << "\n";
        return false;
      }
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  ProbeFlags flags;
  if (!ParseFlags(argc, argv, flags)) return 2;

  const std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(flags.address, grpc::InsecureChannelCredentials());
  std::unique_ptr<grpc::health::v1::Health::Stub> stub = grpc::health::v1::Health::NewStub(channel);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(flags.timeout_ms));
  // Wait for the connection within the deadline rather than failing on the first attempt, so a
  // probe fired while the server is still binding reports "not yet" only after the timeout.
  context.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(flags.service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::cerr << "model_probe: " << flags.address << " service \"" << flags.service
              << "\": " << status.error_message() << " (code " << status.error_code() << ")\n";
    return 1;
  }
  const std::string serving_status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  std::cout << flags.address << " service \"" << flags.service << "\": " << serving_status << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}
