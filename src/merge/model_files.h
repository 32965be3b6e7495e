// Everything in an output model directory besides the weights: config and
// tokenizer files, the chat template, and the model card.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "formats/checkpoint.h"

namespace chatvec {

struct ModelFilesReport {
  std::vector<std::string> copied;   // file names copied from the files source
  std::string chat_template_source;  // where the chat template came from ("" if none)
  std::vector<std::string> notes;
};

// Copy the non-weight files of `files_from` (config.json, tokenizer files,
// generation_config.json, ...) into `out_dir`, except README.md.  Then, when
// `template_from` is a directory with a chat template (`chat_template` in its
// tokenizer_config.json, or chat_template.jinja), that template replaces the
// one the copied files carry.  `dtype_name_for_config`, when not empty, is
// written as config.json's torch_dtype.
// `template_file`, when not empty, is a Jinja file whose text becomes the
// chat template instead (--chat-template).
ModelFilesReport write_model_files(const std::string& files_from, const std::string& template_from,
                                   const std::string& out_dir, const std::string& torch_dtype,
                                   const std::string& template_file = "");

struct ModelCard {
  std::string title;
  std::vector<std::pair<std::string, std::string>> inputs;  // (role, path)
  std::vector<std::string> base_models;                     // for the front matter
  std::string recipe;                                       // formula, one line
  std::string command_line;
  std::vector<std::string> details;                         // extra bullet lines
};

// README.md with Hugging Face front matter (base_model, tags: merge, chat-vector).
std::string render_model_card(const ModelCard& card);

// torch_dtype spelling of a dtype ("bfloat16").
std::string torch_dtype_name(DType t);

}  // namespace chatvec
