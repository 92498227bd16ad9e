#pragma once

// A Triton-style model repository on the local file system:
//
//   DIR/<model>/config.pbtxt           optional (without it the handler completes the config)
//   DIR/<model>/<version>/model.pt     TorchScript (platform "pytorch_libtorch")
//   DIR/<model>/<version>/model.pt2    AOTInductor package (platform "torch_aoti")
//   DIR/<model>/warmup/<file>          data files of model_warmup samples
//
// <version> is a folder named by a positive integer without leading zeros; other folders (and
// files) beside it are ignored, as Triton ignores them. default_model_filename replaces the file
// name. The version policy (default: latest { num_versions: 1 }) picks the versions served.
//
// The repository reads files only when asked and keeps no state beyond its folder's path: every
// method may be called from any thread at any time, and sees the files as they are then. It knows
// nothing of gRPC, torch or loading; the server decides what to load and when.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "protos/model_config.pb.h"

namespace model_server::repository {

// One version of a model to serve and the file to load it from.
struct VersionFile {
  int64_t version = 0;
  std::string path;  // "DIR/<model>/<version>/<file>"; the file exists when Read returns
};

// A model as the repository describes it, ready for the server to load.
struct RepositoryModel {
  std::string name;
  // The config the server settles on, checked by ValidateModelConfig: as written in config.pbtxt
  // (or empty without one), with `name` set to the folder's name, platform and backend set (from
  // the model file found when the config names neither), version_policy set (Triton's default
  // when absent) and each instance_group's count 0 made 1. Inputs, outputs and, without
  // config.pbtxt, max_batch_size are left for the handler to complete when absent.
  inference::ModelConfig config;
  // The versions the policy picks, ascending; never empty.
  std::vector<VersionFile> versions;
  // False when the folder has no config.pbtxt (Triton's auto-complete case).
  bool has_config_file = false;
  // Fingerprint(name) taken before the files were read: if a file changes while Read reads, the
  // next Fingerprint differs from this one, so a poller reloads rather than missing the change.
  uint64_t fingerprint = 0;
};

class ModelRepository {
 public:
  struct Options {
    // A config.pbtxt larger than this is refused unread.
    size_t max_config_bytes = size_t{1} << 20;
  };

  // A repository at `dir` (a folder; a trailing '/' is dropped). NOT_FOUND, PERMISSION_DENIED or
  // another errno-derived code naming `dir` when it cannot be opened as a folder.
  static absl::StatusOr<ModelRepository> Create(std::string dir, Options options);
  static absl::StatusOr<ModelRepository> Create(std::string dir) {
    return Create(std::move(dir), Options());
  }

  const std::string& dir() const { return dir_; }

  // The names of the folders in the repository, sorted; hidden ones (starting with '.') left out.
  // A name may still be refused by ValidateModelName (Read says so). Error: the folder cannot be
  // read.
  absl::StatusOr<std::vector<std::string>> ListModels() const;

  // The model in folder `name`: its settled config and the files of the versions its policy
  // picks. Errors name the model and the file or field:
  //  - INVALID_ARGUMENT: a name ValidateModelName refuses; a config.pbtxt that does not parse
  //    ("DIR/<model>/config.pbtxt:<line>:<column>: ...") or that ValidateModelConfig refuses; no
  //    version folder; a version listed by version_policy.specific without its folder; a picked
  //    version without its model file (naming version and path); both model.pt and model.pt2 and
  //    nothing to choose between them; a model_warmup data file missing;
  //  - NOT_FOUND: no folder `name` in the repository;
  //  - another errno-derived code when a file or folder cannot be read.
  absl::StatusOr<RepositoryModel> Read(std::string_view name) const;

  // A cheap digest of everything Read would read for `name`, for polling: equal digests mean the
  // model's files have not changed (a reload is not needed); a different digest means something
  // changed. It covers the bytes of config.pbtxt, and for every other file and folder under
  // DIR/<name> (three levels deep, following symbolic links, at most 10000 entries): its path
  // relative to the model's folder, type, size, modification and status-change times (ns),
  // device and inode. So a model file replaced (new inode), rewritten (times), a version folder
  // added or removed, or the config's text edited all change it; rewriting config.pbtxt with
  // the same bytes does not. Reads no model file. NOT_FOUND when the folder is gone; an error
  // when `name` is refused or the folder cannot be read (what lies below it and cannot be read
  // goes into the digest instead).
  absl::StatusOr<uint64_t> Fingerprint(std::string_view name) const;

 private:
  ModelRepository(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}

  std::string dir_;
  Options options_;
};

}  // namespace model_server::repository
