// convert, generate, chat, perplexity: registered by the engine module.
#include "cli/command.h"

namespace chatvec::cli {
void register_engine_commands(CLI::App&, std::function<int()>&) {}
}  // namespace chatvec::cli
