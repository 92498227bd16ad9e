#include "server/infer_call.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "protocol/oip.h"
#include "server/served_model.h"

namespace model_server::server {

void InferCall::Listen(const CallContext& context, const Methods& methods,
                       grpc::ServerCompletionQueue* cq) {
  (new InferCall(context, methods, cq))->Start();
}

InferCall::InferCall(const CallContext& context, const Methods& methods,
                     grpc::ServerCompletionQueue* cq)
    : BatchedCallOf(context, cq, metrics::Method::kModelInfer), methods_(methods) {}

void InferCall::RequestCall() {
  methods_.service->RequestModelInfer(&server_context_, &request_, &responder_, cq_, cq_,
                                      static_cast<Tag*>(this));
}

void InferCall::ListenAgain() { Listen(context_, methods_, cq_); }

absl::StatusOr<std::shared_ptr<ServedModel>> InferCall::Route() {
  return methods_.models->Find(request_.model_name(), request_.model_version());
}

absl::StatusOr<DecodedCall> InferCall::Decode(const ServedModel& model) {
  const handlers::ModelSignature& signature = model.signature();
  absl::StatusOr<protocol::oip::DecodedInfer> decoded =
      protocol::oip::DecodeInferRequest(request_, signature, model.max_rows_per_request());
  if (!decoded.ok()) return decoded.status();
  batches_ = signature.batches();
  raw_output_ = decoded->raw_output;
  rows_ = decoded->request.rows;
  output_indices_ = std::move(decoded->outputs);
  outputs_.clear();
  for (const size_t index : output_indices_) {
    const handlers::TensorSpec& spec = signature.outputs[index];
    outputs_.push_back({spec.name, spec.type, {}, {}});
  }
  return DecodedCall{std::move(decoded->request), decoded->priority, decoded->timeout,
                     std::move(decoded->cache_parameters)};
}

void InferCall::KeepOutputs(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                            int64_t task_row, int64_t rows) {
  for (size_t i = 0; i < outputs_.size(); ++i) {
    protocol::oip::ReplyTensor& reply = outputs_[i];
    const handlers::OutputTensor& output = outputs[output_indices_[i]];
    const size_t all_bytes =
        handlers::ElementCount(output.shape).value_or(0) * handlers::ElementSize(output.type);
    if (!batches_) {
      reply.shape = output.shape;
      reply.data.assign(output.data, all_bytes);
      continue;
    }
    const size_t row_bytes = output.shape[0] > 0 ? all_bytes / output.shape[0] : 0;
    if (task_row == 0) {
      reply.shape = output.shape;
      reply.shape[0] = rows_;
      reply.data.resize(rows_ * row_bytes);
    }
    if (row_bytes == 0) continue;  // no elements (and maybe no data pointer)
    std::memcpy(reply.data.data() + task_row * row_bytes, output.data + batch_row * row_bytes,
                rows * row_bytes);
  }
}

void InferCall::EncodeReply(int64_t model_version) {
  const std::string version = std::to_string(model_version);
  protocol::oip::EncodeInferResponse({request_.model_name(), version, request_.id()}, outputs_,
                                     raw_output_, &reply_);
}

}  // namespace model_server::server
