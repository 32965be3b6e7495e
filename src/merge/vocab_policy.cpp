#include "merge/vocab_policy.h"

#include <algorithm>

#include "core/error.h"
#include "core/file_util.h"
#include "formats/architecture.h"

namespace chatvec {

const char* embedding_policy_name(EmbeddingPolicy p) {
  switch (p) {
    case EmbeddingPolicy::Auto: return "auto";
    case EmbeddingPolicy::Full: return "full";
    case EmbeddingPolicy::Shared: return "shared";
    case EmbeddingPolicy::Align: return "align";
    case EmbeddingPolicy::Skip: return "skip";
  }
  return "?";
}

std::optional<EmbeddingPolicy> embedding_policy_from_name(const std::string& s) {
  for (auto p : {EmbeddingPolicy::Auto, EmbeddingPolicy::Full, EmbeddingPolicy::Shared, EmbeddingPolicy::Align,
                 EmbeddingPolicy::Skip})
    if (s == embedding_policy_name(p)) return p;
  return std::nullopt;
}

std::vector<std::string> vocab_tensor_names(const Checkpoint& target) {
  std::vector<std::string> out;
  for (const auto& n : target.names())
    if (is_vocab_tensor(n)) out.push_back(n);
  return out;
}

std::vector<int64_t> chat_rows_of_base(const Vocabulary* base, const Vocabulary* chat, uint64_t rows_base,
                                       uint64_t rows_chat) {
  std::vector<int64_t> out(rows_base, -1);
  for (int64_t j = 0; j < int64_t(rows_base); ++j) {
    if (base && chat) {
      if (j >= int64_t(base->size())) {  // a padding row
        out[size_t(j)] = j < int64_t(rows_chat) ? j : -1;
        continue;
      }
      const std::string& s = base->token(int(j));
      const int c = s.empty() ? -1 : chat->id(s);
      out[size_t(j)] = c >= 0 && c < int64_t(rows_chat) ? c : -1;
    } else {
      out[size_t(j)] = j < int64_t(rows_chat) ? j : -1;
    }
  }
  return out;
}

std::vector<int64_t> chat_added_rows(const Vocabulary& base, const Vocabulary& chat, uint64_t rows_chat) {
  std::vector<int64_t> out;
  const int64_t vc = std::min<int64_t>(int64_t(chat.size()), int64_t(rows_chat));
  for (int64_t k = 0; k < vc; ++k) {
    const std::string& s = chat.token(int(k));
    if (!s.empty() && !base.contains(s)) out.push_back(k);
  }
  return out;
}

namespace {

bool has_tokenizer_files(const std::string& dir) {
  return !dir.empty() && (path_exists(dir + "/tokenizer.json") || path_exists(dir + "/tokenizer.model"));
}

// Does `v` start with every token of `prefix`, id for id?
bool starts_with(const Vocabulary& v, const Vocabulary& prefix) {
  if (v.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (v.token(int(i)) != prefix.token(int(i))) return false;
  return true;
}

uint64_t rows_of(const Checkpoint& c, const std::vector<std::string>& names, const char* role) {
  uint64_t rows = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const CheckpointTensor* t = c.find(names[i]);
    if (!t) throw InputError("tensor \"" + names[i] + "\" is missing from the " + role + " model " + c.path());
    if (t->shape().size() != 2)
      throw InputError("tensor \"" + names[i] + "\" in " + c.path() + " is not 2-D: " + shape_string(t->shape()));
    if (t->shape()[0] == 0 || t->shape()[1] == 0)
      throw InputError("tensor \"" + names[i] + "\" in " + c.path() + " has no elements (" + shape_string(t->shape()) +
                       "): a vocabulary tensor needs rows and columns");
    if (i == 0) rows = t->shape()[0];
    else if (t->shape()[0] != rows)
      throw InputError(c.path() + ": \"" + names[i] + "\" has " + std::to_string(t->shape()[0]) + " rows but \"" +
                       names[0] + "\" has " + std::to_string(rows));
  }
  return rows;
}

std::string choices_help() {
  return "choose --embeddings shared (the target appends tokens to the base's vocabulary), align (match rows by "
         "token string; needs both tokenizers) or skip (keep the target's rows, as the paper did)";
}

// The four steps of decide_vocabulary(), in order.

// 1. Which policy applies (auto resolved from the tokenizers), and why.
void choose_policy(VocabDecision& d, const VocabSide& base, const VocabSide& target, EmbeddingPolicy p) {
  if (d.base && d.target) {
    size_t overlap = 0;
    for (size_t i = 0; i < d.target->size(); ++i) {
      const std::string& s = d.target->token(int(i));
      if (!s.empty() && d.base->contains(s)) ++overlap;
    }
    d.overlap = overlap;
  }
  if (p == EmbeddingPolicy::Auto) {
    if (!d.base || !d.target) {
      if (d.rows_base == d.rows_target) {
        p = EmbeddingPolicy::Full;
        d.why = "embedding shapes match and the tokenizers cannot be compared (" +
                std::string(!d.base ? "base" : "target") + " has none)";
      } else {
        throw InputError("the vocabularies differ (" + std::to_string(d.rows_base) + " embedding rows in the base, " +
                         std::to_string(d.rows_target) + " in the target) and the tokenizers cannot be compared (" +
                         std::string(!d.base ? base.path : target.path) + " has no tokenizer): " + choices_help());
      }
    } else if (d.target->size() == d.base->size() && starts_with(*d.target, *d.base)) {
      p = d.rows_base == d.rows_target ? EmbeddingPolicy::Full : EmbeddingPolicy::Shared;
      d.why = "the target's and the base's vocabularies are identical (" + std::to_string(d.base->size()) + " tokens)" +
              (p == EmbeddingPolicy::Shared ? " but their embedding rows differ" : "");
    } else if (starts_with(*d.target, *d.base)) {
      p = EmbeddingPolicy::Shared;
      d.why = "the target's vocabulary (" + std::to_string(d.target->size()) + ") starts with the base's (" +
              std::to_string(d.base->size()) + "): " + std::to_string(d.target->size() - d.base->size()) +
              " tokens appended";
    } else {
      p = EmbeddingPolicy::Align;
      d.why = "the vocabularies are ordered differently (" + std::to_string(d.overlap) + " of the target's " +
              std::to_string(d.target->size()) + " tokens are in the base); rows are matched by token string";
    }
  } else {
    d.why = "chosen with --embeddings";
  }
  d.policy = p;
}

// 2. The row of every output row under the policy: combined (target row +
//    the vector of the matching base/chat rows) or the target's own.
std::vector<RowOp> build_row_map(VocabDecision& d) {
  const std::vector<int64_t> chat_of_base = chat_rows_of_base(d.base.get(), d.chat.get(), d.rows_base, d.rows_chat);
  auto chat_row_of_base = [&](int64_t j) { return chat_of_base[size_t(j)]; };
  std::vector<RowOp> rows(d.rows_target);
  const int64_t rt = int64_t(d.rows_target);
  const int64_t vt = d.target ? int64_t(d.target->size()) : rt;
  auto combine_or_keep = [&](int64_t i, int64_t b) {
    const int64_t c = b >= 0 && b < int64_t(d.rows_base) ? chat_row_of_base(b) : -1;
    rows[size_t(i)] = c >= 0 ? RowOp{RowOp::Combine, i, c, b} : RowOp{RowOp::KeepTarget, i, -1, -1};
  };
  switch (d.policy) {
    case EmbeddingPolicy::Full:
      if (d.rows_base != d.rows_target)
        throw InputError("--embeddings full needs equal embedding shapes, but the base has " +
                         std::to_string(d.rows_base) + " rows and the target " + std::to_string(d.rows_target) + ": " +
                         choices_help());
      for (int64_t i = 0; i < rt; ++i) combine_or_keep(i, i);
      break;
    case EmbeddingPolicy::Shared: {
      int64_t n = std::min<int64_t>(int64_t(d.rows_base), rt);
      if (d.base && d.target) n = std::min<int64_t>(n, int64_t(std::min(d.base->size(), d.target->size())));
      if (d.base && d.target && !starts_with(*d.target, *d.base) && !starts_with(*d.base, *d.target))
        d.notes.push_back("warning: with --embeddings shared the rows are matched by index, but the tokenizers "
                          "differ within the shared range (align matches by token string)");
      for (int64_t i = 0; i < rt; ++i) {
        if (i < n) combine_or_keep(i, i);
        else combine_or_keep(i, -1);
      }
      break;
    }
    case EmbeddingPolicy::Align:
      if (!d.base || !d.target)
        throw InputError("--embeddings align needs the tokenizers of base and target: " + d.notes.front());
      for (int64_t i = 0; i < rt; ++i) {
        const std::string s = i < vt ? d.target->token(int(i)) : std::string();
        combine_or_keep(i, s.empty() ? -1 : d.base->id(s));
      }
      break;
    case EmbeddingPolicy::Skip:
    case EmbeddingPolicy::Auto:
      for (int64_t i = 0; i < rt; ++i) combine_or_keep(i, -1);
      break;
  }
  return rows;
}

// 3. Tokens the chat model added (absent from the base) follow their rows:
//    into the target's row for the token when it has one, else appended
//    (padding rows first).  Returns the output tokenizer's size.
int64_t transplant_tokens(VocabDecision& d, std::vector<RowOp>& rows, bool transplant) {
  const int64_t rt = int64_t(d.rows_target);
  int64_t next_id = d.target ? int64_t(d.target->size()) : rt;
  if (d.base && d.chat) {
    std::vector<std::string> skipped;
    for (int64_t k : chat_added_rows(*d.base, *d.chat, d.rows_chat)) {
      const std::string& s = d.chat->token(int(k));
      if (!transplant) {
        skipped.push_back(s);
        continue;
      }
      Transplant t{s, d.chat->is_special(int(k)) || d.chat->type(int(k)) == TokenType::Control, int(k), -1, false};
      const int at = d.target ? d.target->id(s) : -1;
      if (at >= 0 && at < rt) {
        t.output_id = at;
        rows[size_t(at)] = RowOp{RowOp::FromChat, -1, k, -1};
      } else if (d.target) {
        t.output_id = int(next_id);
        t.appended = true;
        if (next_id < int64_t(rows.size())) {
          rows[size_t(next_id)] = RowOp{RowOp::FromChat, -1, k, -1};  // a padding row becomes the token's
        } else {
          rows.push_back(RowOp{RowOp::FromChat, -1, k, -1});
        }
        ++next_id;
      } else {
        d.notes.push_back("warning: the chat model's token \"" + s +
                          "\" cannot be transplanted: the target has no readable tokenizer");
        continue;
      }
      d.transplants.push_back(std::move(t));
    }
    if (!skipped.empty())
      d.notes.push_back("warning: " + std::to_string(skipped.size()) +
                        " tokens the chat model added are not transplanted (--special-tokens none), e.g. \"" +
                        skipped.front() + "\"");
  } else if (d.rows_chat > d.rows_base) {
    d.notes.push_back("warning: the chat model has " + std::to_string(d.rows_chat - d.rows_base) +
                      " more embedding rows than the base, but without both tokenizers they cannot be identified");
  }
  return next_id;
}

// 4. Count what each row became (rows past the output tokenizer are
//    padding), and keep the row map unless the tensors are plain
//    element-wise ones (every row combined with itself) or skipped whole.
void count_rows(VocabDecision& d, const std::vector<RowOp>& rows, int64_t next_id) {
  d.rows_combined = d.rows_target_kept = d.rows_padding = 0;
  d.vocab_output = d.target ? size_t(next_id) : 0;
  d.rows_output = rows.size();
  const int64_t tokens_out = d.target ? next_id : int64_t(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (int64_t(i) >= tokens_out) ++d.rows_padding;
    else if (rows[i].kind == RowOp::Combine) ++d.rows_combined;
    else if (rows[i].kind == RowOp::KeepTarget) ++d.rows_target_kept;
  }
  if (d.rows_padding)
    d.notes.push_back(std::to_string(d.rows_padding) + " padding rows beyond the output's " +
                      std::to_string(tokens_out) + " tokens (vocab_size rounded up) are not tokens: kept as the "
                      "target's" + (d.policy == EmbeddingPolicy::Full ? " or combined by index" : ""));
}

void summarize(VocabDecision& d, std::vector<RowOp> rows, int64_t next_id) {
  const bool rows_equal = d.rows_base == d.rows_target && d.rows_chat == d.rows_base;
  count_rows(d, rows, next_id);
  if (d.policy == EmbeddingPolicy::Skip && d.transplants.empty()) {
    d.skip_tensors = true;
    return;
  }
  bool identity = rows_equal;
  for (size_t i = 0; identity && i < rows.size(); ++i)
    identity = rows[i].kind == RowOp::Combine && rows[i].target_row == int64_t(i) && rows[i].chat_row == int64_t(i) &&
               rows[i].base_row == int64_t(i);
  if (identity) return;
  auto map = std::make_shared<RowMap>();
  map->rows = std::move(rows);
  d.row_map = map;
}

}  // namespace

std::shared_ptr<const Vocabulary> load_tokenizer_of(const std::string& dir, const std::string& role,
                                                    std::vector<std::string>& notes) {
  if (!has_tokenizer_files(dir)) {
    notes.push_back(role + " has no tokenizer.json or tokenizer.model");
    return nullptr;
  }
  // A tokenizer that exists but is malformed is an error, not a shrug.
  return std::make_shared<const Vocabulary>(Vocabulary::load(dir));
}

uint64_t vocab_rows(const Checkpoint& c, const std::vector<std::string>& names, const std::string& role) {
  return rows_of(c, names, role.c_str());
}

VocabDecision decide_vocabulary(const VocabSide& base, const VocabSide& chat, const VocabSide& target,
                                const VocabOptions& opt, std::vector<std::string> notes) {
  VocabDecision d;
  d.notes = std::move(notes);
  d.rows_target = target.rows;
  d.rows_base = base.rows;
  d.rows_chat = chat.rows;
  d.base = base.vocab;
  d.chat = chat.vocab;
  d.target = target.vocab;
  d.vocab_base = d.base ? d.base->size() : 0;
  d.vocab_chat = d.chat ? d.chat->size() : 0;
  d.vocab_target = d.target ? d.target->size() : 0;

  choose_policy(d, base, target, opt.policy);
  std::vector<RowOp> rows = build_row_map(d);
  const int64_t next_id = transplant_tokens(d, rows, opt.transplant);
  summarize(d, std::move(rows), next_id);
  return d;
}

VocabDecision decide_vocabulary(const Checkpoint& base, const Checkpoint& chat, const Checkpoint& target,
                                const VocabOptions& opt) {
  const std::vector<std::string> names = vocab_tensor_names(target);
  if (names.empty()) {
    VocabDecision d;
    d.why = "the target has no embedding tensor";
    return d;
  }
  VocabSide t{rows_of(target, names, "target"), nullptr, target.path()};
  VocabSide b{rows_of(base, names, "base"), nullptr, base.path()};
  VocabSide c{rows_of(chat, names, "chat"), nullptr, chat.path()};
  std::vector<std::string> notes;
  auto dir_of = [](const Checkpoint& m) { return m.is_directory() ? m.dir() : std::string(); };
  b.vocab = load_tokenizer_of(dir_of(base), "the base", notes);
  c.vocab = load_tokenizer_of(dir_of(chat), "the chat model", notes);
  t.vocab = load_tokenizer_of(dir_of(target), "the target", notes);
  return decide_vocabulary(b, c, t, opt, std::move(notes));
}

namespace {

// Every output row of a decision, also when it kept none (identity or skip).
std::vector<RowOp> all_rows(const VocabDecision& d) {
  if (d.row_map) return d.row_map->rows;
  std::vector<RowOp> rows(d.rows_target);
  for (int64_t i = 0; i < int64_t(d.rows_target); ++i)
    rows[size_t(i)] = d.skip_tensors ? RowOp{RowOp::KeepTarget, i, -1, -1} : RowOp{RowOp::Combine, i, i, i};
  return rows;
}

bool same_tokens(const Vocabulary* a, const Vocabulary* b) {
  if (!a || !b) return a == b;
  if (a->size() != b->size()) return false;
  for (size_t i = 0; i < a->size(); ++i)
    if (a->token(int(i)) != b->token(int(i))) return false;
  return true;
}

}  // namespace

VocabDecision decide_for_vectors(const std::vector<VectorVocabulary>& vs, int rows_from,
                                 const std::function<bool(size_t, int64_t, size_t, int64_t)>& same_rows) {
  if (vs.empty()) throw std::logic_error("decide_for_vectors: no vector");
  VocabDecision d = vs[0].decision;
  for (size_t j = 1; j < vs.size(); ++j) {
    const VocabDecision& dj = vs[j].decision;
    if (dj.rows_base != d.rows_base || !same_tokens(dj.base.get(), d.base.get()))
      throw InputError(vs[j].path + " and " + vs[0].path +
                       " were extracted from different base models (their base vocabularies differ): apply them one "
                       "at a time");
  }
  // Where vector i stored chat row c.
  auto stored_index = [&](size_t i, int64_t c) -> int64_t {
    const auto& s = vs[i].stored_chat_rows;
    const auto it = std::find(s.begin(), s.end(), c);
    if (it == s.end())
      throw InputError(vs[i].path + ": the vector does not hold the chat model's row " + std::to_string(c) +
                       " (extracted by an older chatvec, or with the embeddings excluded): extract it again");
    return int64_t(it - s.begin());
  };
  const int64_t rt = int64_t(d.rows_target);
  const int64_t tokens_target = d.target ? int64_t(d.target->size()) : rt;
  std::vector<RowOp> rows(static_cast<size_t>(rt));
  std::vector<Transplant> transplants;
  std::vector<std::vector<RowOp>> rows_of_vector;
  for (const auto& v : vs) rows_of_vector.push_back(all_rows(v.decision));
  // Rows of the target's own tokens (and its padding): combined when any
  // vector combines them, a transplanted token's row when one is there.
  for (int64_t k = 0; k < rt; ++k) {
    RowOp out{RowOp::KeepTarget, k, -1, -1};
    for (size_t i = 0; i < vs.size(); ++i) {
      const VocabDecision& di = vs[i].decision;
      const RowOp r = rows_of_vector[i][size_t(k)];
      const bool appended_here = std::any_of(di.transplants.begin(), di.transplants.end(),
                                             [&](const Transplant& t) { return t.appended && t.output_id == k; });
      if (r.kind == RowOp::Combine && out.kind == RowOp::KeepTarget) out = RowOp{RowOp::Combine, k, -1, r.base_row};
      if (r.kind == RowOp::FromChat && !appended_here) {
        if (out.kind == RowOp::FromChat) continue;  // the same token (at the target's id): checked below
        out = RowOp{RowOp::FromChat, -1, stored_index(i, r.chat_row), -1, int32_t(i)};
      }
    }
    rows[size_t(k)] = out;
  }
  // Transplanted tokens: the union, in order of the vectors; appended ones
  // take the next ids (padding rows first).
  int64_t next_id = tokens_target;
  for (size_t i = 0; i < vs.size(); ++i) {
    for (Transplant t : vs[i].decision.transplants) {
      const int64_t stored = stored_index(i, t.chat_id);
      auto same = std::find_if(transplants.begin(), transplants.end(),
                               [&](const Transplant& u) { return u.content == t.content; });
      if (same != transplants.end()) {
        const size_t j = size_t(same->vector);
        const int64_t other = stored_index(j, same->chat_id);
        if (!same_rows(j, other, i, stored)) {
          if (rows_from < 0)
            throw InputError("token \"" + t.content + "\" is added by " + vs[j].path + " and by " + vs[i].path +
                             " with different rows: choose whose rows to use with --token-rows-from N");
          if (size_t(rows_from) == i) {
            same->vector = int(i);
            same->chat_id = t.chat_id;
            rows[size_t(same->output_id)] = RowOp{RowOp::FromChat, -1, stored, -1, int32_t(i)};
          }
        }
        continue;
      }
      t.vector = int(i);
      if (!t.appended) {
        rows[size_t(t.output_id)] = RowOp{RowOp::FromChat, -1, stored, -1, int32_t(i)};
      } else {
        t.output_id = int(next_id);
        const RowOp r{RowOp::FromChat, -1, stored, -1, int32_t(i)};
        if (next_id < int64_t(rows.size())) rows[size_t(next_id)] = r;
        else rows.push_back(r);
        ++next_id;
      }
      transplants.push_back(std::move(t));
    }
  }
  d.transplants = std::move(transplants);
  d.notes.clear();
  for (const auto& v : vs)
    for (const auto& n : v.decision.notes)
      if (std::find(d.notes.begin(), d.notes.end(), n) == d.notes.end() && n.find("padding rows beyond") == std::string::npos)
        d.notes.push_back(n);
  count_rows(d, rows, next_id);
  d.row_map.reset();
  d.skip_tensors = false;
  if (d.transplants.empty() && std::all_of(rows.begin(), rows.end(), [](const RowOp& r) { return r.kind == RowOp::KeepTarget; }) &&
      d.policy == EmbeddingPolicy::Skip) {
    d.skip_tensors = true;
    return d;
  }
  // Plain element-wise tensors when every row is the vectors' row of itself.
  bool identity = d.rows_base == d.rows_target && int64_t(rows.size()) == rt;
  for (int64_t k = 0; identity && k < rt; ++k)
    identity = rows[size_t(k)].kind == RowOp::Combine && rows[size_t(k)].base_row == k;
  if (!identity) {
    auto map = std::make_shared<RowMap>();
    map->rows = std::move(rows);
    d.row_map = map;
  }
  return d;
}

std::vector<std::string> describe_vocabulary(const VocabDecision& d) {
  std::vector<std::string> out;
  auto vs = [](size_t v, uint64_t rows) {
    std::string s = v ? std::to_string(v) + " tokens" : std::string("no tokenizer");
    if (rows != v) s += ", " + std::to_string(rows) + " rows";
    return s;
  };
  out.push_back("vocabulary: base " + vs(d.vocab_base, d.rows_base) + "; chat " + vs(d.vocab_chat, d.rows_chat) +
                "; target " + vs(d.vocab_target, d.rows_target) +
                (d.vocab_target && d.vocab_base ? "; " + std::to_string(d.overlap) + " target tokens in the base" : ""));
  out.push_back("embeddings: " + std::string(embedding_policy_name(d.policy)) + " (" + d.why + ")");
  if (d.rows_target)
    out.push_back("embedding rows: " + std::to_string(d.rows_combined) + " get the vector, " +
                  std::to_string(d.rows_target_kept) + " target rows kept, " + std::to_string(d.rows_padding) +
                  " padding rows, " + std::to_string(d.transplants.size()) + " from the chat model; output " +
                  std::to_string(d.rows_output) + " rows");
  for (const auto& t : d.transplants)
    out.push_back("  token \"" + t.content + "\": chat id " + std::to_string(t.chat_id) + " -> output id " +
                  std::to_string(t.output_id) + (t.appended ? " (appended)" : " (the target's id; the row follows the token)"));
  for (const auto& n : d.notes) out.push_back("  " + n);
  return out;
}

}  // namespace chatvec
