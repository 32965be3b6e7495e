// A Hugging Face model directory, besides its weights: config.json,
// tokenizer_config.json, generation_config.json, the tokenizer files, the chat
// template, and the other side files a model carries.
//
// Everything in chatvec that reads or writes these files goes through here:
// one rule for where a chat template is found, one way to rewrite a JSON
// file, one filter for the side files copied from an input model to an output.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_util.h"

namespace chatvec {

// ---- JSON files -------------------------------------------------------------

// The parsed file, or null when it does not exist (a malformed file is an
// InputError naming it).
Json read_json_if_exists(const std::string& path);
// Replace (or create) a JSON file with `j`, pretty-printed as the Hugging Face
// libraries write their configs.
void rewrite_json_file(const std::string& path, const Json& j);

// A special token as tokenizer_config.json gives it: a string, or an
// AddedToken object {"content": ...}.  "" when absent or of another form.
std::string special_token_text(const Json& tokenizer_config, std::string_view key);
// A token-id field (config.json / generation_config.json "eos_token_id"): an
// integer or a list of integers; other entries are ignored.
std::vector<int> token_id_list(const Json& value);

// ---- side files ---------------------------------------------------------------

// Is this file of a model directory carried from an input model to an output
// (config, tokenizer, generation config, chat template, ...)?  Not the
// weights, not the model card (README.md: every output writes its own), not
// a chat vector's recipe (chatvec.json), not hidden files.
bool is_side_file_name(std::string_view name);
// The side files of directory `dir`, sorted.
std::vector<std::string> side_files(const std::string& dir);
// Copy every side file of `from` into `to` (an existing directory), replacing
// files of the same name.  Returns the names copied, sorted.
std::vector<std::string> copy_side_files(const std::string& from, const std::string& to);

// ---- the chat template ----------------------------------------------------------

// The chat template files a directory carries, as they are.
struct ChatTemplateFiles {
  std::optional<std::string> jinja;          // chat_template.jinja
  std::optional<Json> tokenizer_config;      // tokenizer_config.json "chat_template" (string or list)
  std::optional<Json> template_json;         // chat_template.json "chat_template"
  bool empty() const { return !jinja && !tokenizer_config && !template_json; }
};
ChatTemplateFiles read_chat_template_files(const std::string& dir);

// The chat template of a directory, by the one precedence rule every command
// uses (as transformers resolves it):
//   1. chat_template.jinja (the template named "default" only);
//   2. tokenizer_config.json "chat_template": a string, or from a list of
//      {"name", "template"} the entry named `name`;
//   3. chat_template.json "chat_template" (string or list, as 2).
// nullopt when the directory has none; InputError for a malformed entry or a
// list without `name` (the message lists the names available).
struct FoundChatTemplate {
  std::string text;
  std::string origin;  // the file it came from
};
std::optional<FoundChatTemplate> find_chat_template(const std::string& dir, const std::string& name = "default");

// Make `files` the chat template of directory `dir`: the template files `dir`
// had are removed (chat_template.jinja, chat_template.json, the
// tokenizer_config.json entry), then `files` written.
void replace_chat_template(const std::string& dir, const ChatTemplateFiles& files);

}  // namespace chatvec
