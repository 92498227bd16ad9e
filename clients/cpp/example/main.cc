// Evaluates the seed's demo request on a running model_server and prints the prediction:
//   model_client_example HOST:PORT
// Exit status 0 when the server answered, 1 otherwise.

#include <iostream>

#include "clients/cpp/model_client.h"

int main(int argc, char** argv) {
  namespace client = model_server::client;
  const std::string target = argc > 1 ? argv[1] : "127.0.0.1:13000";
  const std::shared_ptr<grpc::Channel> channel = client::MakeChannel(target);
  if (const absl::Status serving = client::WaitForServing(channel); !serving.ok()) {
    std::cerr << "server not serving: " << serving << "\n";
    return 1;
  }
  client::ModelClient model(channel);
  const client::Columns inputs = {{"x_1", {1.0, 2.0}}, {"x_2", {0.5, 0.1}}, {"x_3", {3, 2}}};
  const absl::StatusOr<client::Columns> prediction =
      model.Evaluate(inputs, {0.1, 0.2, 0.3, 0.4, 0.5});
  if (!prediction.ok()) {
    std::cerr << "EvaluateModel failed: " << prediction.status() << "\n";
    return 1;
  }
  for (const auto& [name, values] : *prediction) {
    std::cout << name << ":";
    for (const double value : values) std::cout << " " << value;
    std::cout << "\n";
  }
  return 0;
}
