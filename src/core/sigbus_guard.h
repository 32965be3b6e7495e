// Input files that change while they are memory-mapped.
//
// Reading a page of a mapped file that has since been truncated raises
// SIGBUS, which would kill the process.  Every MappedFile registers its range
// here; a process-wide SIGBUS handler recognises a fault inside a registered
// range, maps a page of zeros over the faulting page (so the interrupted
// instruction, on whatever thread, completes) and records the fault.  Faults
// outside registered ranges go to the previous handler (a real bug still
// crashes).  check_input_faults() (called by check_interrupted(), i.e. once
// per chunk by the merge executor) then throws an error naming the file, so
// the partial output is discarded as for any other error.  It also notices
// a registered file whose size or modification time changed (truncated or
// rewritten in place) before any page faults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace chatvec {

// Register/unregister a mapped range [begin, begin+size) of file `path`,
// open as `fd` (kept open by the caller while registered).  watch installs
// the handler on first use.  At most kMaxWatchedMaps ranges are guarded at
// once; beyond that a mapping is simply not guarded.
constexpr size_t kMaxWatchedMaps = 4096;
void watch_mapped_input(const void* begin, size_t size, const std::string& path, int fd);
void unwatch_mapped_input(const void* begin) noexcept;

// Throws RuntimeFailure "<path>: input file was truncated or rewritten while
// being read ..." if a registered file faulted or changed since it was
// mapped.
void check_input_faults();

// Number of SIGBUS faults absorbed so far (for tests).
uint64_t input_fault_count();

}  // namespace chatvec
