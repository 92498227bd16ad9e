#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "protos/model_interface.grpc.pb.h"
#include "server/batched_call.h"
#include "server/model_registry.h"

namespace model_server::server {

// One EvaluateModel call (the seed's ModelService): the seed's JSON in and out, computed by the
// latest version of the server's seed model. BatchedCall says which thread runs each step.
class EvaluateCall final : public BatchedCallOf<inRequest, outCalc> {
 public:
  // What EvaluateModel calls need beyond CallContext; outlives every call.
  struct Methods {
    ModelService::AsyncService* service = nullptr;
    const ModelRegistry* models = nullptr;
    std::string model;  // the model EvaluateModel computes with (its latest version)
  };

  // Arms one call waiting for the next request on `cq`.
  static void Listen(const CallContext& context, const Methods& methods,
                     grpc::ServerCompletionQueue* cq);

 private:
  EvaluateCall(const CallContext& context, const Methods& methods, grpc::ServerCompletionQueue* cq);

  void RequestCall() override;
  void ListenAgain() override;
  absl::StatusOr<std::shared_ptr<ServedModel>> Route() override;
  absl::StatusOr<DecodedCall> Decode(const ServedModel& model) override;
  void KeepOutputs(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                   int64_t task_row, int64_t rows) override;
  void EncodeReply(int64_t model_version) override;

  const Methods& methods_;
  std::vector<std::string> output_names_;  // the reply's columns, from the request
  size_t seed_output_ = 0;                 // the model's output that holds the columns
  std::vector<float> outputs_;             // [rows_, output_names_.size()] for the reply
  int64_t rows_ = 0;
};

}  // namespace model_server::server
