#include "merge/model_inputs.h"

#include "core/error.h"
#include "core/file_util.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_reader.h"

namespace chatvec {

Checkpoint ModelInputs::open(const std::string& arg, const std::string& role, std::vector<std::string>& warnings) {
  const ModelSource src = resolve_model_argument(arg);
  if (!src.note.empty()) notes_.push_back(role + " model " + src.note);
  if (src.hub) {
    const HfCachedModel& h = *src.hub;
    if (!h.broken_links.empty())
      throw InputError(arg + ": the cached snapshot " + h.dir + " has files whose blobs are missing (" +
                       h.broken_links.front() + (h.broken_links.size() > 1 ? ", ..." : "") +
                       "): an interrupted download; fetch it again with `huggingface-cli download " + h.repo_id + "`");
    notes_.push_back(role + " model " + arg + ": " + h.repo_id + " revision " + h.revision + " = commit " + h.commit +
                     ", from the Hugging Face cache (" + h.dir + ")");
  }
  resolved_.push_back(ResolvedInput{role, arg, src.path, src.hub});
  const std::string& path = src.path;
  std::string dir = path;
  if (!is_directory(path) && gguf::looks_like_gguf(path)) {
    // Import into a hidden sibling of the output, never committed.
    auto tmp = std::make_unique<StagedOutput>(out_ + ".input-" + std::to_string(imports_.size() + 1),
                                              StagedOutput::Kind::Directory, true);
    const gguf::ImportSummary s = gguf::import_gguf(path, tmp->path());
    for (const auto& n : s.notes) warnings.push_back(role + " model " + path + ": " + n);
    if (s.dequantized)
      warnings.push_back(role + " model " + path + ": " + std::to_string(s.dequantized) +
                         " Q8_0 tensors dequantised to F32 for the arithmetic");
    dir = tmp->path();
    imports_.emplace_back(path, std::move(tmp));
  }
  Checkpoint c = Checkpoint::open(dir);
  for (const auto& w : c.warnings()) warnings.push_back(role + " model: " + w);
  return c;
}

std::string ModelInputs::files_dir(const std::string& path) const {
  for (const auto& [p, tmp] : imports_)
    if (p == path) return tmp->path();
  return path;
}

}  // namespace chatvec
