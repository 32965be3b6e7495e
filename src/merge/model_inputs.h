// Opening the models a merge reads: a Hugging Face directory (safetensors or
// PyTorch .bin weights), a single .safetensors or .bin file, a .gguf file, or
// a Hugging Face id org/name[@revision] found in the local cache
// (formats/hf_cache.h: a local path of the same spelling wins, and a note
// says so).  A GGUF input is imported (names mapped
// back to Hugging Face's, q/k rows un-permuted, Q8_0 dequantised to F32) into
// a hidden temporary directory beside the output, removed when the command
// ends however it ends; the merge then streams from it like any checkpoint.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/staging.h"
#include "formats/checkpoint.h"
#include "formats/hf_cache.h"

namespace chatvec {

// How one model argument was resolved.
struct ResolvedInput {
  std::string role;  // "base", "chat", "target"
  std::string arg;   // as the user wrote it
  std::string path;  // what was opened
  std::optional<HfCachedModel> hub;  // set when it came from the Hugging Face cache
};

class ModelInputs {
 public:
  // `out` is the command's output path: temporary imports go beside it.
  explicit ModelInputs(std::string out) : out_(std::move(out)) {}
  // Open `path` as the model playing `role` ("base", "chat", ...); warnings
  // go to `warnings`.
  Checkpoint open(const std::string& path, const std::string& role, std::vector<std::string>& warnings);
  // The directory whose config/tokenizer files stand for `path` (the import
  // directory for a GGUF input).
  std::string files_dir(const std::string& path) const;

  // Every input opened, in order.
  const std::vector<ResolvedInput>& resolved() const { return resolved_; }
  // Report lines about the resolution ("org/name: the local directory is
  // used, not the Hugging Face model of that name", "org/name@main: commit
  // ... from the Hugging Face cache ...").
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  std::string out_;
  std::vector<ResolvedInput> resolved_;
  std::vector<std::string> notes_;
  std::vector<std::pair<std::string, std::unique_ptr<StagedOutput>>> imports_;
};

}  // namespace chatvec
