#include "repository/model_repository.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "repository/model_config.h"

namespace model_server::repository {
namespace {

using inference::ModelConfig;

constexpr char kConfigFileName[] = "config.pbtxt";
constexpr int kFingerprintDepth = 3;
constexpr size_t kFingerprintMaxEntries = 10000;
// Separates the fields of a fingerprint line (no file name holds it).
constexpr absl::string_view kSeparator("\0", 1);

// Debian's Abseil has its own string_view (not std::string_view's alias).
absl::string_view View(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

std::string Quoted(std::string_view name) { return absl::StrCat("\"", View(name), "\""); }

// The names in folder `path` except "." and "..", sorted; errno when it cannot be read.
absl::StatusOr<std::vector<std::string>> ListFolder(const std::string& path) {
  DIR* folder = opendir(path.c_str());
  if (folder == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = readdir(folder)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int error = errno;
  closedir(folder);
  if (error != 0) return absl::ErrnoToStatus(error, absl::StrCat("cannot read ", path));
  std::sort(names.begin(), names.end());
  return names;
}

// stat() following links; nullopt with errno set when it fails.
std::optional<struct stat> Stat(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) return std::nullopt;
  return info;
}

bool IsFile(const std::string& path) {
  const std::optional<struct stat> info = Stat(path);
  return info && S_ISREG(info->st_mode);
}

// The whole file at `path` if it is a file of at most `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  struct stat info;
  if (fstat(fd, &info) != 0) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(error, absl::StrCat("cannot read ", path));
  }
  if (!S_ISREG(info.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a file"));
  }
  std::string text;
  char buffer[16384];
  while (true) {
    const ssize_t got = read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      close(fd);
      return absl::ErrnoToStatus(error, absl::StrCat("cannot read ", path));
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
    if (text.size() > max_bytes) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is larger than ", max_bytes, " bytes; a config is a few kB"));
    }
  }
  close(fd);
  return text;
}

// The version a folder name stands for: digits without a leading zero, as Triton reads them.
std::optional<int64_t> VersionOfFolder(std::string_view name) {
  if (name.empty() || name.front() < '1' || name.front() > '9') return std::nullopt;
  for (const char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int64_t version = 0;
  if (!absl::SimpleAtoi(View(name), &version)) return std::nullopt;  // too large
  return version;
}

// Builds the fingerprint's text: one line per entry under a model's folder.
class FingerprintWalk {
 public:
  explicit FingerprintWalk(size_t max_config_bytes) : max_config_bytes_(max_config_bytes) {}

  void Folder(const std::string& path, const std::string& relative, int depth) {
    absl::StatusOr<std::vector<std::string>> names = ListFolder(path);
    if (!names.ok()) {
      absl::StrAppend(&text_, relative, kSeparator, "unreadable", kSeparator,
                      names.status().ToString(), "\n");
      return;
    }
    for (const std::string& name : *names) {
      if (name.front() == '.') continue;  // editors' and tools' hidden files
      if (++entries_ > kFingerprintMaxEntries) {
        absl::StrAppend(&text_, kSeparator, "truncated\n");
        return;
      }
      const std::string child = absl::StrCat(path, "/", name);
      const std::string child_relative =
          relative.empty() ? name : absl::StrCat(relative, "/", name);
      if (depth == 1 && name == kConfigFileName) {
        absl::StatusOr<std::string> bytes = ReadSmallFile(child, max_config_bytes_);
        if (bytes.ok()) {
          absl::StrAppend(&text_, child_relative, kSeparator, "bytes", kSeparator, bytes->size(),
                          kSeparator, *bytes, "\n");
          continue;
        }
      }
      const std::optional<struct stat> info = Stat(child);
      if (!info) {
        absl::StrAppend(&text_, child_relative, kSeparator, "unreadable", kSeparator, errno, "\n");
        continue;
      }
      absl::StrAppend(&text_, child_relative, kSeparator, info->st_mode & S_IFMT, kSeparator,
                      info->st_size, kSeparator, info->st_mtim.tv_sec, ".", info->st_mtim.tv_nsec,
                      kSeparator, info->st_ctim.tv_sec, ".", info->st_ctim.tv_nsec, kSeparator,
                      info->st_dev, kSeparator, info->st_ino, "\n");
      if (S_ISDIR(info->st_mode) && depth < kFingerprintDepth) {
        Folder(child, child_relative, depth + 1);
      }
    }
  }

  // FNV-1a, 64 bits: stable across runs and builds, unlike absl::Hash.
  uint64_t Digest() const {
    uint64_t hash = 14695981039346656037ull;
    for (const char c : text_) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 1099511628211ull;
    }
    return hash;
  }

 private:
  size_t max_config_bytes_;
  size_t entries_ = 0;
  std::string text_;
};

}  // namespace

absl::StatusOr<ModelRepository> ModelRepository::Create(std::string dir, Options options) {
  if (dir.empty()) return absl::InvalidArgumentError("the model repository's path is empty");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  DIR* folder = opendir(dir.c_str());
  if (folder == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("model repository ", dir, " cannot be read"));
  }
  closedir(folder);
  return ModelRepository(std::move(dir), options);
}

absl::StatusOr<std::vector<std::string>> ModelRepository::ListModels() const {
  absl::StatusOr<std::vector<std::string>> names = ListFolder(dir_);
  if (!names.ok()) {
    return absl::Status(names.status().code(),
                        absl::StrCat("model repository: ", names.status().message()));
  }
  std::vector<std::string> models;
  for (std::string& name : *names) {
    if (name.front() == '.') continue;
    const std::optional<struct stat> info = Stat(absl::StrCat(dir_, "/", View(name)));
    if (info && S_ISDIR(info->st_mode)) models.push_back(std::move(name));
  }
  return models;
}

absl::StatusOr<uint64_t> ModelRepository::Fingerprint(std::string_view name) const {
  if (absl::Status status = ValidateModelName(name); !status.ok()) return status;
  const std::string folder = absl::StrCat(dir_, "/", View(name));
  const std::optional<struct stat> info = Stat(folder);
  if (!info) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("model ", Quoted(name), " is not in the model repository ", dir_));
    }
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("model ", Quoted(name), ": cannot read ", folder));
  }
  if (!S_ISDIR(info->st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", Quoted(name), ": ", folder, " is not a folder"));
  }
  FingerprintWalk walk(options_.max_config_bytes);
  walk.Folder(folder, "", 1);
  return walk.Digest();
}

absl::StatusOr<RepositoryModel> ModelRepository::Read(std::string_view name) const {
  absl::StatusOr<uint64_t> fingerprint = Fingerprint(name);
  if (!fingerprint.ok()) return fingerprint.status();
  const std::string model = Quoted(name);
  const std::string folder = absl::StrCat(dir_, "/", View(name));

  RepositoryModel result;
  result.name = std::string(name);
  result.fingerprint = *fingerprint;
  ModelConfig& config = result.config;

  const std::string config_path = absl::StrCat(folder, "/", kConfigFileName);
  if (Stat(config_path)) {
    absl::StatusOr<std::string> text = ReadSmallFile(config_path, options_.max_config_bytes);
    if (!text.ok()) {
      return absl::Status(text.status().code(),
                          absl::StrCat("model ", model, ": ", text.status().message()));
    }
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(*text, config_path);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          absl::StrCat("model ", model, ": ", parsed.status().message()));
    }
    config = *std::move(parsed);
    result.has_config_file = true;
  } else if (errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("model ", model, ": cannot read ", config_path));
  }

  // The config's own errors first, before any file is looked for; the platform, when neither it
  // nor the backend is given, comes from the model file below.
  const bool platform_from_file = config.platform().empty() && config.backend().empty();
  {
    ModelConfig probe = config;
    if (platform_from_file) probe.set_platform(std::string(kPlatformTorchScript));
    if (absl::Status status = ValidateModelConfig(probe, name); !status.ok()) return status;
  }
  config.set_name(std::string(name));
  if (!config.has_version_policy())
    config.mutable_version_policy()->mutable_latest()->set_num_versions(1);
  for (inference::ModelInstanceGroup& group : *config.mutable_instance_group()) {
    if (group.count() == 0) group.set_count(1);
  }

  // The version folders and the policy's pick.
  absl::StatusOr<std::vector<std::string>> entries = ListFolder(folder);
  if (!entries.ok()) {
    return absl::Status(entries.status().code(),
                        absl::StrCat("model ", model, ": ", entries.status().message()));
  }
  std::vector<int64_t> available;
  for (const std::string& entry : *entries) {
    const std::optional<int64_t> version = VersionOfFolder(entry);
    if (!version) continue;
    const std::optional<struct stat> info = Stat(absl::StrCat(folder, "/", entry));
    if (info && S_ISDIR(info->st_mode)) available.push_back(*version);
  }
  std::sort(available.begin(), available.end());
  std::vector<int64_t> picked;
  const inference::ModelVersionPolicy& policy = config.version_policy();
  if (policy.has_all()) {
    picked = available;
  } else if (policy.has_specific()) {
    picked.assign(policy.specific().versions().begin(), policy.specific().versions().end());
    std::sort(picked.begin(), picked.end());
    for (const int64_t version : picked) {
      if (!std::binary_search(available.begin(), available.end(), version)) {
        return absl::InvalidArgumentError(
            absl::StrCat("model ", model, ": version_policy.specific lists version ", version,
                         ", but there is no version folder ", folder, "/", version));
      }
    }
  } else {
    const size_t count = std::min<size_t>(policy.latest().num_versions(), available.size());
    picked.assign(available.end() - static_cast<std::ptrdiff_t>(count), available.end());
  }
  if (picked.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model ", model, ": no version folder in ", folder,
        " (a folder named by the version number, 1 or more, holding the model file: ", folder,
        "/1/", View(ModelFileName(config)), ")"));
  }

  if (platform_from_file) {
    if (!config.default_model_filename().empty()) {
      config.set_platform(std::string(absl::EndsWith(config.default_model_filename(), ".pt2")
                                          ? kPlatformAoti
                                          : kPlatformTorchScript));
    } else {
      const std::string version_folder = absl::StrCat(folder, "/", picked.back());
      const bool torchscript = IsFile(absl::StrCat(version_folder, "/", kTorchScriptFileName));
      const bool aoti = IsFile(absl::StrCat(version_folder, "/", kAotiFileName));
      if (torchscript && aoti) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model ", model, ": ", version_folder, " holds both ", kTorchScriptFileName, " and ",
            kAotiFileName, "; say which to serve with platform: \"", kPlatformTorchScript,
            "\" or \"", kPlatformAoti, "\" in ", config_path));
      }
      if (!torchscript && !aoti) {
        return absl::InvalidArgumentError(
            absl::StrCat("model ", model, " version ", picked.back(), ": ", version_folder,
                         " holds no model file (", kTorchScriptFileName, " for TorchScript or ",
                         kAotiFileName, " for an AOTInductor package)"));
      }
      config.set_platform(std::string(aoti ? kPlatformAoti : kPlatformTorchScript));
    }
  }
  if (config.platform().empty()) config.set_platform(std::string(kPlatformTorchScript));
  if (config.backend().empty()) config.set_backend(std::string(kBackendPytorch));
  if (absl::Status status = ValidateModelConfig(config, name); !status.ok()) return status;

  const std::string_view file_name = ModelFileName(config);
  for (const int64_t version : picked) {
    std::string path = absl::StrCat(folder, "/", version, "/", View(file_name));
    if (!IsFile(path)) {
      return absl::InvalidArgumentError(absl::StrCat("model ", model, " version ", version,
                                                     ": the model file ", path, " is missing"));
    }
    result.versions.push_back(VersionFile{version, std::move(path)});
  }
  for (const inference::ModelWarmup& warmup : config.model_warmup()) {
    for (const auto& [input, data] : warmup.inputs()) {
      if (data.input_data_type_case() != inference::ModelWarmup::Input::kInputDataFile) continue;
      const std::string path = absl::StrCat(folder, "/warmup/", data.input_data_file());
      if (!IsFile(path)) {
        return absl::InvalidArgumentError(
            absl::StrCat("model ", model, ": model_warmup \"", warmup.name(), "\": input \"", input,
                         "\": the input_data_file ", path, " is missing"));
      }
    }
  }
  return result;
}

}  // namespace model_server::repository
