// echo_server: answers every ModelService.EvaluateModel with the same fixed response, without
// parsing the request or running a model, on model_server's own completion-queue code
// (server/completion_queue.h, server/unary_call.h). Its throughput is what our transport allows
// without JSON and model on a machine.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <cxxopts.hpp>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "platform/cpus.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/completion_queue.h"
#include "server/unary_call.h"

namespace model_server::bench {
namespace {

using EchoCall = server::UnaryCall<inRequest, outCalc>;

// {"prediction": {"y_1": [rows values]}}, the size of the demo model's answer.
std::string FixedResponse(int rows) {
  std::string json = "{\"prediction\": {\"y_1\": [";
  for (int i = 0; i < rows; ++i) json += i > 0 ? ", 0.123456789" : "0.123456789";
  return json + "]}}";
}

int Main(int argc, char** argv) {
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
      flags["cq-threads"].as<int>() > 0 ? flags["cq-threads"].as<int>() : platform::UsableCpus();
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  for (int i = 0; i < threads; ++i) queues.push_back(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::cerr << "echo_server: cannot listen on " << flags["address"].as<std::string>()
              << std::endl;
    return 1;
  }
  const EchoCall::Methods echo{[&service](grpc::ServerContext* context, inRequest* request,
                                          grpc::ServerAsyncResponseWriter<outCalc>* responder,
                                          grpc::ServerCompletionQueue* cq, void* tag) {
                                 service.RequestEvaluateModel(context, request, responder, cq, cq,
                                                              tag);
                               },
                               [&reply](const inRequest&, outCalc* response) {
                                 *response = reply;
                                 return grpc::Status::OK;
                               }};
  std::vector<std::thread> pollers;
  for (auto& cq : queues) {
    for (int i = 0; i < server::kCallsArmedPerQueue; ++i) EchoCall::Listen(echo, cq.get());
    pollers.emplace_back([queue = cq.get()] { server::PollCompletionQueue(queue); });
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

}  // namespace
}  // namespace model_server::bench

int main(int argc, char** argv) { return model_server::bench::Main(argc, argv); }
