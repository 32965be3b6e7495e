#include "train/model_io.h"

#include <algorithm>
#include <filesystem>
#include <fmt/core.h>
#include <map>
#include <unistd.h>
#include <unordered_map>

#include "core/error.h"
#include "core/file_util.h"
#include "engine/kernels.h"
#include "formats/checkpoint.h"
#include "formats/model_dir.h"
#include "formats/safetensors/safetensors_writer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace chatvec::train {

namespace fs = std::filesystem;

Transformer<float> load_transformer(const std::string& dir) {
  Checkpoint ck = Checkpoint::open(dir);
  if (!ck.has_config()) throw InputError(dir + ": no config.json");
  const ModelConfig cfg = parse_model_config(ck.config(), ck.dir() + "/config.json");
  Transformer<float> m(cfg);
  for (const ParamSlot& s : m.slots()) {
    const CheckpointTensor& t = ck.at(s.name);
    std::vector<uint64_t> want(s.shape.begin(), s.shape.end());
    if (t.shape() != want) throw InputError(fmt::format("{}: tensor \"{}\" has an unexpected shape", dir, s.name));
    require_convertible(t.dtype(), fmt::format("{}: tensor \"{}\"", dir, s.name), "training");
    convert_to_f32(t.dtype(), t.data(), s.size, m.params.data() + s.offset);
  }
  return m;
}

void write_weights(const Transformer<float>& m, const std::string& dir) {
  std::vector<TensorSpec> specs;
  for (const ParamSlot& s : m.slots()) {
    TensorSpec t{s.name, DType::F32, {}};
    for (int64_t d : s.shape) t.shape.push_back(uint64_t(d));
    specs.push_back(std::move(t));
  }
  {
    SafetensorsWriter w(dir, specs, UINT64_MAX / 2, {{"format", "pt"}});
    for (const ParamSlot& s : m.slots()) w.append(m.params.data() + s.offset, s.size * sizeof(float));
    w.finish();
  }
  const std::string cfg_path = dir + "/config.json";
  Json cfg = path_exists(cfg_path) ? read_json_file(cfg_path) : Json::object();
  cfg["vocab_size"] = m.config().vocab_size;
  cfg["torch_dtype"] = "float32";
  rewrite_json_file(cfg_path, cfg);
}

std::vector<int> append_tokens_in_place(const std::string& dir, const std::vector<std::string>& tokens, bool special) {
  const std::string tmp = dir + "/.append-tmp";
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  std::vector<NewToken> nt;
  for (const auto& t : tokens) nt.push_back({t, special});
  std::vector<int> ids = append_tokens(dir, tmp, nt);
  for (const auto& e : fs::directory_iterator(tmp))
    fs::copy_file(e.path(), fs::path(dir) / e.path().filename(), fs::copy_options::overwrite_existing);
  fs::remove_all(tmp);
  return ids;
}

std::vector<LearnedToken> learn_vocabulary_extension(const std::string& model_dir, const std::vector<std::string>& lines,
                                                     int count, size_t max_tokens) {
  const Tokenizer tok = Tokenizer::load(model_dir);
  const Vocabulary& voc = tok.vocab();
  // Pieces: current token strings; comps: the original pieces of each.
  std::vector<std::string> piece;
  std::vector<std::vector<int>> comps;
  std::vector<bool> mergeable;
  for (size_t i = 0; i < voc.size(); ++i) {
    piece.push_back(voc.token(int(i)));
    comps.push_back({int(i)});
    const TokenType ty = voc.type(int(i));
    mergeable.push_back(ty == TokenType::Normal && !voc.is_added(int(i)) && !piece.back().empty());
  }
  std::vector<std::vector<int>> seqs;
  size_t total = 0;
  for (const auto& line : lines) {
    if (total >= max_tokens) break;
    std::vector<int> ids = tok.encode(line, false);
    total += ids.size();
    seqs.push_back(std::move(ids));
  }
  static const std::string kSpace = "\xE2\x96\x81";  // ▁
  auto starts_word = [&](int id) { return piece[size_t(id)].rfind(kSpace, 0) == 0; };
  std::vector<LearnedToken> out;
  std::map<std::pair<int, int>, bool> banned;
  while (int(out.size()) < count) {
    std::unordered_map<uint64_t, int64_t> counts;
    for (const auto& s : seqs)
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const int a = s[i], b = s[i + 1];
        if (!mergeable[size_t(a)] || !mergeable[size_t(b)] || starts_word(b)) continue;
        ++counts[(uint64_t(uint32_t(a)) << 32) | uint32_t(b)];
      }
    uint64_t best = 0;
    int64_t best_n = 1;  // a merge must occur at least twice
    for (const auto& [k, n] : counts) {
      const std::pair<int, int> p{int(k >> 32), int(k & 0xffffffffu)};
      if (banned.count(p)) continue;
      if (n > best_n || (n == best_n && best != 0 && k < best)) {
        best = k;
        best_n = n;
      }
    }
    if (best == 0) break;
    const int a = int(best >> 32), b = int(best & 0xffffffffu);
    const std::string content = piece[size_t(a)] + piece[size_t(b)];
    if (voc.contains(content) || std::any_of(out.begin(), out.end(), [&](const LearnedToken& t) { return t.content == content; })) {
      banned[{a, b}] = true;
      continue;
    }
    const int id = int(piece.size());
    piece.push_back(content);
    std::vector<int> c = comps[size_t(a)];
    c.insert(c.end(), comps[size_t(b)].begin(), comps[size_t(b)].end());
    comps.push_back(c);
    mergeable.push_back(true);
    out.push_back({content, c, best_n});
    for (auto& s : seqs) {
      size_t w = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          s[w++] = id;
          ++i;
        } else {
          s[w++] = s[i];
        }
      }
      s.resize(w);
    }
  }
  return out;
}

}  // namespace chatvec::train
