#pragma once

// What the response cache (batching::ResponseCache) holds for one request, whatever protocol it
// came by: the key, made of everything that decides the model's answer, and the value, the
// request's rows of every output of the model. Each protocol encodes its own reply from the
// outputs, so a reply's form (its id, the outputs it names, raw or typed contents, the seed's
// column names) is never cached.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/model_handler.h"
#include "handlers/model_types.h"

namespace model_server::server {

// The cache key of `request` for version `version` of `model`, served as `owner` (the version's
// ResponseCache owner id, which no later version of the same number shares): the model's name,
// the version and owner, each input's name, data type, shape, broadcast flag and bytes, and the
// request's `parameters` (protocol::oip::DecodedInfer::cache_parameters; the seed's tunable
// parameters are an input). Each part is length-prefixed, so no two requests share a key.
std::string ResponseCacheKey(std::string_view model, int64_t version, uint64_t owner,
                             const handlers::ModelSignature& signature,
                             const handlers::InferenceRequest& request,
                             std::string_view parameters);

// Builds a cache value from the pieces of a request's outputs as the batch thread hands them
// over (InferenceTask::Complete). One per request; batch thread.
class CachedResponseWriter {
 public:
  // Keeps rows [task_row, task_row + rows) of the request, rows [batch_row, batch_row + rows) of
  // each of `outputs` (the whole of each when the model does not batch). `request_rows`: the
  // request's rows.
  void Add(const std::vector<handlers::OutputTensor>& outputs, bool batches, int64_t request_rows,
           int64_t batch_row, int64_t task_row, int64_t rows);
  // The value, once every row was added.
  std::string Finish() { return std::move(value_); }

 private:
  std::string value_;
  std::vector<size_t> data_offsets_;  // where each output's data starts in value_
};

// The outputs a value holds, in the model's order, their data viewing `value` (which must outlive
// them; each output's data is 16-byte aligned within it, so aligned for its elements when the
// value's bytes are). INTERNAL when it is not a value CachedResponseWriter wrote.
absl::StatusOr<std::vector<handlers::OutputTensor>> ReadCachedResponse(const std::string& value);

}  // namespace model_server::server
