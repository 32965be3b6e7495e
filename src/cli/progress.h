// A progress bar on stderr (bytes, rate, ETA), drawn only when stderr is a
// terminal and --quiet is off.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "merge/pipeline.h"

namespace chatvec::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();
  void update(uint64_t done, uint64_t total);
  void finish();

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

// A job's report lines and warnings on stderr (nothing with -q), its
// progress as a ProgressBar (merge, extract, apply, analyze).
class StderrReporter : public JobReporter {
 public:
  void line(const std::string& text) override;
  void warning(const std::string& text) override;
  void progress_begin(const std::string& label) override;
  void progress(uint64_t done, uint64_t total) override;
  void progress_end() override;

 private:
  std::unique_ptr<ProgressBar> bar_;
};

}  // namespace chatvec::cli
