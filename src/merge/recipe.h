// Recipes: a MergeJob (merge or apply) as a JSON file, and back.
//
//   chatvec merge --recipe FILE [flags]     flags given override the file's keys
//   chatvec apply --recipe FILE [flags]
//
// A merge or apply writes the job it ran, resolved (absolute input paths,
// every option spelled out, no output path), as OUT/chatvec.json, so that
// `chatvec merge --recipe OUT/chatvec.json -o OUT2` gives the same tensors.
// docs/operations.md lists the keys; an unknown key is an error naming it.
#pragma once

#include <filesystem>

#include "core/json_util.h"
#include "merge/pipeline.h"

namespace chatvec {

// The job as a recipe: every key that changes the output (and "output" when
// the job has one; threads, force, dry run and the command line are not
// recorded).
Json recipe_to_json(const MergeJob& job);

// A recipe into a job.  Relative input paths (and the output and chat
// template) are taken relative to `relative_to` (the recipe file's
// directory).  InputError, one line naming the key, on an unknown key, a
// wrong type or a bad value.
MergeJob recipe_from_json(const Json& recipe, const std::filesystem::path& relative_to);

// read_json_file + recipe_from_json, relative to the file's directory; the
// file's name in every message.
MergeJob read_recipe_file(const std::filesystem::path& path);

// The job with its input paths (and chat template) made absolute, as the
// output records it.
MergeJob with_absolute_paths(const MergeJob& job);

}  // namespace chatvec
