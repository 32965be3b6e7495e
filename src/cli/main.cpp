// chatvec: give language models chat abilities by weight arithmetic.
#include <cstdio>
#include <exception>
#include <fmt/core.h>

#include "cli/command.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "formats/hf_cache.h"

namespace chatvec::cli {
GlobalOptions& global_options() {
  static GlobalOptions g;
  return g;
}

std::string model_path(const std::string& arg) {
  const ModelSource s = resolve_model_argument(arg);
  if (!s.note.empty() && !global_options().quiet) std::fprintf(stderr, "chatvec: note: %s\n", s.note.c_str());
  if (s.hub && !s.hub->broken_links.empty())
    throw InputError(arg + ": the cached snapshot " + s.hub->dir + " has files whose blobs are missing (" +
                     s.hub->broken_links.front() + (s.hub->broken_links.size() > 1 ? ", ..." : "") +
                     "): an interrupted download; fetch it again with `huggingface-cli download " + s.hub->repo_id +
                     "`");
  return s.path;
}
}  // namespace chatvec::cli

int main(int argc, char** argv) {
  using namespace chatvec;
  CLI::App app{"chatvec " CHATVEC_VERSION
               " - add a chat vector (chat - base) to a model: out = target + ratio * (chat - base)"};
  app.set_version_flag("--version", "chatvec " CHATVEC_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("-q,--quiet", cli::global_options().quiet, "No progress or report on stderr");
  std::function<int()> run;
  for (cli::Register reg : {cli::register_merge, cli::register_extract, cli::register_apply, cli::register_inspect,
                            cli::register_diff, cli::register_analyze, cli::register_engine_commands, cli::register_gguf,
                            cli::register_train, cli::register_eval, cli::register_tune})
    reg(app, run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors: one line and exit status 2.
    std::fprintf(stderr, "chatvec: error: %s\n", e.what());
    return 2;
  }
  install_interrupt_handlers();
  try {
    return run ? run() : 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "chatvec: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chatvec: internal error: %s\n", e.what());
    return 1;
  }
}
