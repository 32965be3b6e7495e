// Ctrl-C and termination signals: the first one sets a flag that long loops
// poll (check_interrupted() throws, so destructors remove partial output); a
// second one ends the process at once.
#pragma once

namespace chatvec {

void install_interrupt_handlers();
bool interrupted();
// Throws an Error (exit status 130) if a signal arrived, or RuntimeFailure
// if a mapped input file was truncated or rewritten (see sigbus_guard.h).
void check_interrupted();

}  // namespace chatvec
