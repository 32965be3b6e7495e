#include "engine_test_support.h"

#include <fstream>
#include <memory>

#include "convert/llama2c_import.h"

namespace chatvec::testing {

fs::path stories_dir() { return shared_dir() / "models" / "stories260K"; }

std::string converted_stories() {
  static std::unique_ptr<TempDir> dir;
  if (!dir) {
    if (!fs::exists(stories_dir() / "stories260K.bin")) return {};
    dir = std::make_unique<TempDir>();
    Llama2cImportOptions o;
    o.model_bin = (stories_dir() / "stories260K.bin").string();
    o.tokenizer_model = (stories_dir() / "tok512.model").string();
    o.out_dir = (dir->path() / "stories260K-hf").string();
    import_llama2c(o);
  }
  return (dir->path() / "stories260K-hf").string();
}

static std::string script() { return (source_dir() / "tests" / "engine" / "reference_llama.py").string(); }

std::vector<double> reference_logits(const std::string& model_dir, const std::vector<int64_t>& tokens) {
  TempDir tmp;
  std::string ids;
  for (int64_t t : tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
  const std::string out = (tmp.path() / "logits.f64").string();
  CommandResult r = run_command("/usr/bin/python3 " + shell_quote(script()) + " " + shell_quote(model_dir) +
                                " --mode logits --tokens " + ids + " --out " + shell_quote(out));
  if (r.exit_code != 0) throw std::runtime_error("reference_llama.py failed: " + r.err);
  std::ifstream f(out, std::ios::binary);
  f.seekg(0, std::ios::end);
  std::vector<double> v(size_t(f.tellg()) / 8);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 8));
  return v;
}

Json reference_nll_text(const std::string& model_dir, const std::string& text_file, const std::string& tokenizer) {
  CommandResult r = run_command("/usr/bin/python3 " + shell_quote(script()) + " " + shell_quote(model_dir) +
                                " --mode nll --text-file " + shell_quote(text_file) + " --tokenizer " +
                                shell_quote(tokenizer));
  if (r.exit_code != 0) throw std::runtime_error("reference_llama.py failed: " + r.err);
  return Json::parse(r.out);
}

}  // namespace chatvec::testing
