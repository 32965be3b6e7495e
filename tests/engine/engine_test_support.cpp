#include "engine_test_support.h"

#include <algorithm>
#include <cmath>
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

namespace {
std::vector<double> read_f64(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(0, std::ios::end);
  std::vector<double> v(size_t(f.tellg()) / 8);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 8));
  return v;
}
}  // namespace

std::vector<std::vector<double>> reference_logits_batch(const std::vector<ReferenceJob>& jobs) {
  TempDir tmp;
  Json list = Json::array();
  for (size_t i = 0; i < jobs.size(); ++i)
    list.push_back({{"model", jobs[i].model_dir},
                    {"tokens", jobs[i].tokens},
                    {"out", (tmp.path() / (std::to_string(i) + ".f64")).string()}});
  const std::string jobs_file = (tmp.path() / "jobs.json").string();
  {
    std::ofstream f(jobs_file);
    f << list.dump();
  }
  CommandResult r = run_command("/usr/bin/python3 " + shell_quote(script()) + " --mode batch --jobs " + shell_quote(jobs_file));
  if (r.exit_code != 0) throw std::runtime_error("reference_llama.py failed: " + r.err);
  std::vector<std::vector<double>> out;
  for (size_t i = 0; i < jobs.size(); ++i) out.push_back(read_f64((tmp.path() / (std::to_string(i) + ".f64")).string()));
  return out;
}

Json reference_nll_text(const std::string& model_dir, const std::string& text_file, const std::string& tokenizer) {
  CommandResult r = run_command("/usr/bin/python3 " + shell_quote(script()) + " " + shell_quote(model_dir) +
                                " --mode nll --text-file " + shell_quote(text_file) + " --tokenizer " +
                                shell_quote(tokenizer));
  if (r.exit_code != 0) throw std::runtime_error("reference_llama.py failed: " + r.err);
  return Json::parse(r.out);
}

// max over positions of max|ours - ref| / max|ref| (per position's logits).
double max_relative_error(LlamaModel& m, const std::vector<int64_t>& tokens, const std::vector<double>& ref) {
  const int64_t V = m.config().vocab_size;
  EXPECT_EQ(ref.size(), tokens.size() * size_t(V));
  double worst = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const float* lg = m.forward(tokens[p], int64_t(p));
    double diff = 0, scale = 0;
    for (int64_t j = 0; j < V; ++j) {
      diff = std::max(diff, std::abs(double(lg[j]) - ref[p * V + j]));
      scale = std::max(scale, std::abs(ref[p * V + j]));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

std::vector<int64_t> some_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> t{1};
  for (int64_t i = 1; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    t.push_back(int64_t((seed >> 33) % uint64_t(vocab)));
  }
  return t;
}

}  // namespace chatvec::testing
