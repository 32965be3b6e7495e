#include "cli/progress.h"

#include <unistd.h>

#include <fmt/core.h>

#include <cstdio>

#include "cli/command.h"
#include "core/file_util.h"

namespace chatvec::cli {

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), enabled_(::isatty(2) && !global_options().quiet) {
  start_ = last_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  if (drawn_) std::fputc('\n', stderr);
}

void ProgressBar::update(uint64_t done, uint64_t total) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double el = std::chrono::duration<double>(now - start_).count();
  const double frac = total ? double(done) / double(total) : 1.0;
  const int width = 30;
  const int fill = int(frac * width);
  std::string bar(size_t(fill), '#');
  bar += std::string(size_t(width - fill), '.');
  const double rate = el > 0 ? double(done) / el : 0;
  const std::string eta = rate > 0 && done < total ? format_duration(double(total - done) / rate) : "-";
  std::fprintf(stderr, "\r%s [%s] %3d%% %s/%s %s/s ETA %s   ", label_.c_str(), bar.c_str(), int(frac * 100),
               human_bytes(done).c_str(), human_bytes(total).c_str(), human_bytes(uint64_t(rate)).c_str(),
               eta.c_str());
  drawn_ = true;
}

void ProgressBar::finish() {
  if (drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

void StderrReporter::line(const std::string& text) {
  if (!global_options().quiet) fmt::print(stderr, "{}\n", text);
}

void StderrReporter::warning(const std::string& text) {
  if (!global_options().quiet) fmt::print(stderr, "chatvec: warning: {}\n", text);
}

void StderrReporter::progress_begin(const std::string& label) { bar_ = std::make_unique<ProgressBar>(label); }

void StderrReporter::progress(uint64_t done, uint64_t total) {
  if (bar_) bar_->update(done, total);
}

void StderrReporter::progress_end() {
  if (bar_) bar_->finish();
  bar_.reset();
}

}  // namespace chatvec::cli
