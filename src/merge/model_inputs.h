// Opening the models a merge reads: a Hugging Face directory, a single
// .safetensors file, or a .gguf file.  A GGUF input is imported (names mapped
// back to Hugging Face's, q/k rows un-permuted, Q8_0 dequantised to F32) into
// a hidden temporary directory beside the output, removed when the command
// ends however it ends; the merge then streams from it like any checkpoint.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/staging.h"
#include "formats/checkpoint.h"

namespace chatvec {

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

 private:
  std::string out_;
  std::vector<std::pair<std::string, std::unique_ptr<StagedOutput>>> imports_;
};

}  // namespace chatvec
