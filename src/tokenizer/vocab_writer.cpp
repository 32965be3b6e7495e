// append_tokens(): write a copy of a tokenizer with tokens added.
#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "tokenizer/json_fast.h"
#include "tokenizer/sp_proto.h"
#include "tokenizer/vocab.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {

Json added_entry(const NewToken& t, int id, bool with_id) {
  Json e = Json::object();
  if (with_id) e["id"] = id;
  e["content"] = t.content;
  e["single_word"] = false;
  e["lstrip"] = false;
  e["rstrip"] = false;
  e["normalized"] = !t.special;
  e["special"] = t.special;
  return e;
}

}  // namespace

std::vector<int> append_tokens(const std::string& dir_in, const std::string& dir_out,
                               const std::vector<NewToken>& tokens) {
  fs::path in(dir_in), out(dir_out);
  if (!fs::is_directory(in)) throw InputError(dir_in + ": not a directory");
  if (!fs::is_directory(out)) throw InputError(dir_out + ": not a directory");
  if (fs::equivalent(in, out)) throw InputError(dir_out + ": output directory must differ from the input");
  for (const auto& t : tokens)
    if (t.content.empty()) throw InputError("append_tokens: a new token is empty");

  Vocabulary v = Vocabulary::load(dir_in);
  std::vector<int> ids;
  std::vector<size_t> fresh;  // indexes into tokens of the ones really added
  std::unordered_map<std::string, int> pending;
  int next = static_cast<int>(v.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    int id = v.id(tokens[i].content);
    if (id < 0) {
      auto it = pending.find(tokens[i].content);
      if (it != pending.end()) {
        id = it->second;
      } else {
        id = next++;
        pending.emplace(tokens[i].content, id);
        fresh.push_back(i);
      }
    }
    ids.push_back(id);
  }
  const int first_new = static_cast<int>(v.size());

  fs::path json = in / "tokenizer.json";
  if (fs::exists(json)) {
    std::string what = json.string();
    Json j = detail::parse_json_large(read_file(what), what);
    auto& model = j["model"];
    auto& vocab = model["vocab"];
    auto& added = j["added_tokens"];
    if (added.is_null()) added = Json::array();
    auto& vobj = vocab.get_ref<Json::object_t&>();
    using Base = std::vector<std::pair<const std::string, Json>>;
    Base& vbase = vobj;
    for (size_t k = 0; k < fresh.size(); ++k) {
      const NewToken& t = tokens[fresh[k]];
      int id = ids[fresh[k]];
      added.push_back(added_entry(t, id, true));
      vbase.emplace_back(t.content, Json(id));  // absent from the vocabulary: checked above
    }
    write_file((out / "tokenizer.json").string(), dump_json_pretty(j));
  }

  fs::path spm = in / "tokenizer.model";
  if (fs::exists(spm)) {
    std::string what = spm.string();
    std::string bytes = read_file(what);
    detail::SpModelInfo info = detail::parse_sp_model(bytes, what);
    if (!fresh.empty() && static_cast<int>(info.pieces.size()) != first_new)
      throw InputError(what + ": has " + std::to_string(info.pieces.size()) + " pieces but the tokenizer has " +
                       std::to_string(first_new) + " tokens; cannot append the same ids to both");
    for (const auto& t : fresh) {
      detail::SpPiece p;
      p.piece = tokens[t].content;
      p.score = 0.0f;
      p.type = tokens[t].special ? 3 : 4;
      bytes += detail::serialize_sp_piece(p);
    }
    write_file((out / "tokenizer.model").string(), bytes);
  }

  fs::path cfg = in / "tokenizer_config.json";
  if (fs::exists(cfg)) {
    std::string what = cfg.string();
    Json c = detail::parse_json_large(read_file(what), what);
    auto dec = c.find("added_tokens_decoder");
    if (dec != c.end() && dec->is_object())
      for (size_t k : fresh) (*dec)[std::to_string(ids[k])] = added_entry(tokens[k], ids[k], false);
    write_file((out / "tokenizer_config.json").string(), dump_json_pretty(c));
  }

  fs::path stm = in / "special_tokens_map.json";
  if (fs::exists(stm)) copy_file(stm.string(), (out / "special_tokens_map.json").string());
  return ids;
}

}  // namespace chatvec
