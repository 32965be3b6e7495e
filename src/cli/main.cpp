// chatvec: give language models chat abilities by weight arithmetic.
#include <cstdio>
#include <exception>
#include <fmt/core.h>

#include "cli/command.h"
#include "core/error.h"
#include "core/interrupt.h"

namespace chatvec::cli {
GlobalOptions& global_options() {
  static GlobalOptions g;
  return g;
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
                            cli::register_diff, cli::register_engine_commands, cli::register_gguf,
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
