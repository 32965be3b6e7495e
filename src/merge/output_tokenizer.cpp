#include "merge/output_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "formats/model_dir.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {

// Id of a token in the output tokenizer: the target's, or a transplant's.
int output_id_of(const VocabDecision& vocab, const std::string& token) {
  for (const auto& t : vocab.transplants)
    if (t.content == token) return t.output_id;
  if (vocab.target) return vocab.target->id(token);
  return -1;
}

}  // namespace

EosDecision decide_eos(const std::string& chat_dir, const std::string& target_dir, const VocabDecision& vocab) {
  EosDecision e;
  const Json tc = read_json_if_exists(chat_dir + "/tokenizer_config.json");
  if (tc.is_object() && tc.contains("eos_token")) {
    e.token = special_token_text(tc, "eos_token");
    e.source = chat_dir + "/tokenizer_config.json";
  }
  if (e.token.empty() && vocab.chat) {
    const Json gc = read_json_if_exists(chat_dir + "/generation_config.json");
    std::vector<int> ids = gc.is_object() && gc.contains("eos_token_id") ? token_id_list(gc["eos_token_id"]) : std::vector<int>{};
    if (ids.empty() && vocab.chat->eos_id()) ids.push_back(*vocab.chat->eos_id());
    if (!ids.empty() && ids.front() >= 0 && size_t(ids.front()) < vocab.chat->size()) {
      e.token = vocab.chat->token(ids.front());
      e.source = chat_dir + "/generation_config.json";
    }
  }
  if (!e.token.empty()) e.output_id = output_id_of(vocab, e.token);

  // generation_config eos_token_id: the chat model's end of turn first, then
  // the target's own EOS ids (a list when there are several).
  if (e.output_id >= 0) e.eos_ids.push_back(e.output_id);
  const Json tg = read_json_if_exists(target_dir + "/generation_config.json");
  std::vector<int> target_ids = tg.is_object() && tg.contains("eos_token_id") ? token_id_list(tg["eos_token_id"]) : std::vector<int>{};
  if (target_ids.empty()) {
    const Json cfg = read_json_if_exists(target_dir + "/config.json");
    if (cfg.is_object() && cfg.contains("eos_token_id")) target_ids = token_id_list(cfg["eos_token_id"]);
  }
  for (int id : target_ids)
    if (std::find(e.eos_ids.begin(), e.eos_ids.end(), id) == e.eos_ids.end()) e.eos_ids.push_back(id);
  return e;
}

std::vector<std::string> finalize_output_tokenizer(const std::string& out_dir, const std::string& target_dir,
                                                   const VocabDecision& vocab, const EosDecision& eos) {
  std::vector<std::string> report;
  const std::string tc_path = out_dir + "/tokenizer_config.json";

  // 1. Appended tokens: rewrite the tokenizer files from the target's with
  //    the new tokens, keeping the chat template already placed in
  //    tokenizer_config.json.
  std::vector<NewToken> fresh;
  std::vector<int> predicted;
  for (const auto& t : vocab.transplants)
    if (t.appended) {
      fresh.push_back(NewToken{t.content, t.special});
      predicted.push_back(t.output_id);
    }
  if (!fresh.empty()) {
    const Json kept = read_json_if_exists(tc_path);
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
      fs::remove(out_dir + "/" + f);
    std::vector<int> ids = append_tokens(target_dir, out_dir, fresh);
    if (ids != predicted)
      throw RuntimeFailure("the tokenizer writer assigned different ids to the transplanted tokens than planned");
    if (kept.is_object()) {
      Json now = read_json_if_exists(tc_path);
      if (!now.is_object()) now = Json::object();
      if (kept.contains("chat_template")) now["chat_template"] = kept["chat_template"];
      else now.erase("chat_template");
      rewrite_json_file(tc_path, now);
    }
    report.push_back("tokenizer: " + std::to_string(fresh.size()) + " tokens appended (ids " +
                     std::to_string(predicted.front()) + ".." + std::to_string(predicted.back()) + ")");
  }

  // 2. EOS: the chat model's end-of-turn token.
  if (!eos.token.empty()) {
    if (eos.output_id < 0) {
      report.push_back("warning: the chat model's EOS \"" + eos.token +
                       "\" is not in the output tokenizer (it was not transplanted): the merged model may not stop");
    } else {
      Json tc = read_json_if_exists(tc_path);
      if (!tc.is_object()) tc = Json::object();
      if (tc.contains("eos_token") && tc["eos_token"].is_object()) tc["eos_token"]["content"] = eos.token;
      else tc["eos_token"] = eos.token;
      rewrite_json_file(tc_path, tc);
    }
  }
  if (!eos.eos_ids.empty()) {
    const Json ids = eos.eos_ids.size() == 1 ? Json(eos.eos_ids.front()) : Json(eos.eos_ids);
    const std::string gc_path = out_dir + "/generation_config.json";
    Json gc = read_json_if_exists(gc_path);
    if (!gc.is_object()) gc = Json::object();
    gc["eos_token_id"] = ids;
    rewrite_json_file(gc_path, gc);
    const std::string cfg_path = out_dir + "/config.json";
    Json cfg = read_json_if_exists(cfg_path);
    if (cfg.is_object()) {
      cfg["eos_token_id"] = ids;
      rewrite_json_file(cfg_path, cfg);
    }
    report.push_back(eos.token.empty()
                         ? "eos: the chat model names no end-of-turn token; generation_config eos_token_id " +
                               ids.dump() + " (the target's)"
                         : "eos: \"" + eos.token + "\" from " + eos.source + " -> id " +
                               std::to_string(eos.output_id) + "; generation_config eos_token_id " + ids.dump());
  }

  // 3. config.json vocab_size follows the embedding rows.
  const std::string cfg_path = out_dir + "/config.json";
  Json cfg = read_json_if_exists(cfg_path);
  if (cfg.is_object() && vocab.rows_output && cfg.value("vocab_size", uint64_t(0)) != vocab.rows_output) {
    report.push_back("config: vocab_size " + cfg.value("vocab_size", Json()).dump() + " -> " +
                     std::to_string(vocab.rows_output));
    cfg["vocab_size"] = vocab.rows_output;
    rewrite_json_file(cfg_path, cfg);
  }
  return report;
}

}  // namespace chatvec
