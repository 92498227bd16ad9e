#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace model_server::server {

// The one place an internal status becomes what the client sees.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace model_server::server
