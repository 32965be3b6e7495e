// The chatvec command line: each subcommand lives in its own cmd_<name>.cpp
// and registers itself here.  The CLI only parses flags, calls the engine and
// reports; it does no arithmetic or file-format work of its own.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace chatvec::cli {

// A subcommand's registration: adds itself to `app` and sets a callback that
// runs it.  The callback returns the process exit status.
using Register = void (*)(CLI::App& app, std::function<int()>& run);

// Global flags shared by all subcommands.
struct GlobalOptions {
  bool quiet = false;
};
GlobalOptions& global_options();

// A model argument as the user wrote it: a local path (which always wins),
// or a Hugging Face id org/name[@revision] found in the local cache
// (formats/hf_cache.h).  Returns what to open; InputError (one line, where
// it looked and how to fetch it) when an id is not cached.  When a local
// path shadows an id of the same spelling, says so on stderr (unless -q).
std::string model_path(const std::string& arg);

// Every subcommand, in the order `chatvec --help` lists them.
void register_merge(CLI::App& app, std::function<int()>& run);
void register_extract(CLI::App& app, std::function<int()>& run);
void register_apply(CLI::App& app, std::function<int()>& run);
void register_inspect(CLI::App& app, std::function<int()>& run);
void register_diff(CLI::App& app, std::function<int()>& run);
void register_analyze(CLI::App& app, std::function<int()>& run);  // analyze
void register_engine_commands(CLI::App& app, std::function<int()>& run);  // convert, generate, chat, perplexity
void register_gguf(CLI::App& app, std::function<int()>& run);  // export gguf
// inspect of a .gguf file (cmd_gguf.cpp), called by inspect.
int run_inspect_gguf(const std::string& path, bool json, bool tensors);
void register_train(CLI::App& app, std::function<int()>& run);  // train
void register_eval(CLI::App& app, std::function<int()>& run);   // eval
void register_tune(CLI::App& app, std::function<int()>& run);   // tune

}  // namespace chatvec::cli
