#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <vector>

#include "protocol/oip.h"
#include "protos/grpc_predict_v2.grpc.pb.h"
#include "server/batched_call.h"
#include "server/model_registry.h"

namespace model_server::server {

// One Open Inference Protocol ModelInfer call: tensors in and out (protocol/oip.h), computed by
// the model the request names, in the same batches as EvaluateModel calls. BatchedCall says
// which thread runs each step.
class InferCall final
    : public BatchedCallOf<inference::ModelInferRequest, inference::ModelInferResponse> {
 public:
  // What ModelInfer calls need beyond CallContext; outlives every call.
  struct Methods {
    inference::GRPCInferenceService::AsyncService* service = nullptr;
    const ModelRegistry* models = nullptr;
  };

  // Arms one call waiting for the next request on `cq`.
  static void Listen(const CallContext& context, const Methods& methods,
                     grpc::ServerCompletionQueue* cq);

 private:
  InferCall(const CallContext& context, const Methods& methods, grpc::ServerCompletionQueue* cq);

  void RequestCall() override;
  void ListenAgain() override;
  absl::StatusOr<std::shared_ptr<ServedModel>> Route() override;
  absl::StatusOr<DecodedCall> Decode(const ServedModel& model) override;
  void KeepOutputs(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                   int64_t task_row, int64_t rows) override;
  void EncodeReply(int64_t model_version) override;

  const Methods& methods_;
  bool batches_ = true;  // whether the model has a batch dimension; set by Decode
  bool raw_output_ = true;
  int64_t rows_ = 0;
  // The outputs the reply carries: the signature's index of each, and its name, type, shape and
  // this call's elements.
  std::vector<size_t> output_indices_;
  std::vector<protocol::oip::ReplyTensor> outputs_;
};

}  // namespace model_server::server
