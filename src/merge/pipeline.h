// The merge pipeline: one typed job in, a complete output (or nothing) out.
//
//   merge    out = target + ratio * (chat - base)          one pass, no vector on disk
//   extract  vec = chat - base                             a reusable chat vector
//   apply    out = target + r1 * vec1 + r2 * vec2 + ...    vectors from extract
//
// and each of merge/apply written as a model directory or (--format gguf) a
// GGUF file.  run_job() does everything, in this order:
//
//   1. prepare_job(): open the inputs (GGUF inputs imported beside the
//      output), decide the vocabulary (merge), build the plan (every check),
//      decide the EOS, compose the model card and recipe;
//   2. report the plan; a dry run stops here with its predictions;
//   3. stage the output, check free space, stream the tensors (executor.h);
//   4. add config, tokenizer, chat template and EOS (model_files.h,
//      output_tokenizer.h), the recipe and the model card;
//   5. convert to GGUF when asked; move the output into place.
//
// The caller (the CLI, a test) only fills a MergeJob and prints what the
// JobReporter receives.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "gguf/gguf_format.h"
#include "merge/executor.h"
#include "merge/model_files.h"
#include "merge/model_inputs.h"
#include "merge/output_tokenizer.h"
#include "merge/plan.h"
#include "merge/schedule.h"
#include "merge/vocab_policy.h"

namespace chatvec {

enum class JobKind { Merge, Extract, Apply };
enum class OutputFormat { Safetensors, Gguf };

// A vector of `apply`, with its ratio (a number or a schedule, schedule.h).
struct ApplyVector {
  std::string path;
  RatioSchedule ratio = 1.0;
  bool operator==(const ApplyVector&) const = default;
};

struct MergeJob {
  JobKind kind = JobKind::Merge;
  // merge: all three; extract: base and chat; apply: target.
  std::string base, chat, target;
  RatioSchedule ratio = 1.0;         // merge (a number or a schedule, schedule.h)
  std::vector<ApplyVector> vectors;  // apply
  VectorOps ops;                     // merge, apply: operations on the chat vectors (schedule.h)
  std::string output;

  std::optional<DType> dtype;  // nullopt: auto (the target's per tensor; extract: the chat model's)
  OutputFormat format = OutputFormat::Safetensors;        // merge, apply
  std::optional<gguf::TensorType> gguf_type;              // nullopt: --dtype's, f16 for auto
  std::vector<std::string> include, exclude;              // regular expressions
  EmbeddingPolicy embeddings = EmbeddingPolicy::Auto;     // merge, apply
  bool transplant_special_tokens = true;                  // merge, apply
  int token_rows_from = 0;  // apply: the vector (1-based) whose rows win for a token two vectors add; 0: none
  std::string chat_template_file;                         // merge: --chat-template
  uint64_t shard_size = 5'000'000'000ull;
  uint64_t chunk_bytes = 16ull << 20;  // output bytes computed per step (memory; never the result)
  int threads = 0;  // 0: all cores
  bool force = false;
  bool dry_run = false;
  std::string command_line;  // recorded in the model card
  std::string recipe_file;   // the recipe the job was read from, if any (recorded in the model card)
};

// What a job tells its caller while it runs.
class JobReporter {
 public:
  virtual ~JobReporter() = default;
  // One line of the report ("plan: 83 tensors ...").
  virtual void line(const std::string& text) = 0;
  // Something the user should know but that does not stop the job.
  virtual void warning(const std::string& text) = 0;
  // Streaming progress: begin (with a label), bytes done of total, end.
  virtual void progress_begin(const std::string& label) { (void)label; }
  virtual void progress(uint64_t done, uint64_t total) { (void)done, (void)total; }
  virtual void progress_end() {}
};

// A job with its inputs open and every decision made, before anything is
// written.
struct PreparedJob {
  MergeJob job;
  std::unique_ptr<ModelInputs> inputs;  // owns GGUF imports (removed with it)
  std::unique_ptr<Checkpoint> base, chat, target;
  std::vector<std::unique_ptr<Checkpoint>> vectors;  // apply
  std::vector<Json> vector_recipes;                  // apply: each vector's chatvec.json
  std::shared_ptr<const VocabDecision> vocab;        // merge, apply
  std::shared_ptr<const EosDecision> eos;            // merge, apply into a model directory
  MergePlan plan;
  ExecuteOptions exec;
  ModelCard card;
  Json recipe;                        // written as chatvec.json (extract: the vector's record; merge/apply: recipe.h)
  std::vector<std::string> preamble;  // report lines before the plan (vocabulary, EOS)
  std::string files_from;             // the directory whose side files the output gets
  std::string template_from;          // the directory whose chat template the output gets
  std::string base_tokenizer_from;    // extract: the base model whose tokenizer the vector keeps
};

// Step 1: open, decide, plan.  InputError on any bad input (nothing written).
PreparedJob prepare_job(const MergeJob& job, JobReporter& report);

struct JobResult {
  std::string output;   // the final path
  uint64_t bytes = 0;   // bytes written (0 for a dry run)
  double seconds = 0;
  bool dry_run = false;
};

// Steps 1-5.
JobResult run_job(const MergeJob& job, JobReporter& report);

// The canonical spelling of an output dtype for recipes and messages:
// "auto", "bf16", "f16", "f32", "f64".
std::string dtype_label(const std::optional<DType>& dtype);

}  // namespace chatvec
