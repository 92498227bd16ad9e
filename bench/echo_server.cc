// echo_server: answers every ModelService.EvaluateModel with the same fixed response, without
// parsing the request or running a model, on the same async completion-queue design as
// model_server. Its throughput is what the gRPC transport alone allows on a machine.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sched.h>

#include <csignal>
#include <cxxopts.hpp>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "model_interface.grpc.pb.h"

namespace {

// Calls armed per completion queue, as in model_server.
constexpr int kCallsPerQueue = 16;

class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

// One EvaluateModel call: wait for a request, answer it at once, delete itself.
class EchoCall final : public Tag {
 public:
  static void Listen(ModelService::AsyncService* service, grpc::ServerCompletionQueue* cq,
                     const outCalc* reply) {
    auto* call = new EchoCall(service, cq, reply);
    service->RequestEvaluateModel(&call->context_, &call->request_, &call->responder_, cq, cq,
                                  call);
  }

  void Proceed(bool ok) override {
    if (answered_ || !ok) {  // finished, or the server shut down before a request came
      delete this;
      return;
    }
    Listen(service_, cq_, reply_);
    answered_ = true;
    responder_.Finish(*reply_, grpc::Status::OK, this);
  }

 private:
  EchoCall(ModelService::AsyncService* service, grpc::ServerCompletionQueue* cq,
           const outCalc* reply)
      : service_(service), cq_(cq), reply_(reply), responder_(&context_) {}

  ModelService::AsyncService* const service_;
  grpc::ServerCompletionQueue* const cq_;
  const outCalc* const reply_;
  grpc::ServerContext context_;
  inRequest request_;
  grpc::ServerAsyncResponseWriter<outCalc> responder_;
  bool answered_ = false;
};

int UsableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// {"prediction": {"y_1": [rows values]}}, the size of the demo model's answer.
std::string FixedResponse(int rows) {
  std::string json = "{\"prediction\": {\"y_1\": [";
  for (int i = 0; i < rows; ++i) json += i > 0 ? ", 0.123456789" : "0.123456789";
  return json + "]}}";
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("echo_server", "Answers every EvaluateModel with a fixed response");
  // clang-format off
  options.add_options()
    ("address", "host:port to listen on", cxxopts::value<std::string>()->default_value("0.0.0.0:13000"))
    ("cq-threads", "completion-queue threads; 0 = CPUs this process may use",
     cxxopts::value<int>()->default_value("0"))
    ("rows", "values in the fixed y_1 response", cxxopts::value<int>()->default_value("50"))
    ("h,help", "show this help");
  // clang-format on
  cxxopts::ParseResult flags;
  try {
    flags = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& error) {
    std::cerr << "echo_server: " << error.what() << "\n\n" << options.help() << std::endl;
    return 2;
  }
  if (flags.count("help") > 0) {
    std::cout << options.help() << std::endl;
    return 0;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  outCalc reply;
  reply.set_response_bytes(FixedResponse(flags["rows"].as<int>()));
  ModelService::AsyncService service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(flags["address"].as<std::string>(), grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  const int threads =
      flags["cq-threads"].as<int>() > 0 ? flags["cq-threads"].as<int>() : UsableCpus();
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  for (int i = 0; i < threads; ++i) queues.push_back(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::cerr << "echo_server: cannot listen on " << flags["address"].as<std::string>()
              << std::endl;
    return 1;
  }
  std::vector<std::thread> pollers;
  for (auto& cq : queues) {
    for (int i = 0; i < kCallsPerQueue; ++i) EchoCall::Listen(&service, cq.get(), &reply);
    pollers.emplace_back([queue = cq.get()] {
      void* tag;
      bool ok;
      while (queue->Next(&tag, &ok)) static_cast<Tag*>(tag)->Proceed(ok);
    });
  }
  std::cout << "echo_server listening on port " << port << " with " << threads << " threads"
            << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  for (auto& cq : queues) cq->Shutdown();
  for (std::thread& poller : pollers) poller.join();
  return 0;
}
