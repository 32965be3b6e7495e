// Output that appears complete or not at all.
//
// A StagedOutput is built in a hidden sibling of its final path
// (".NAME.chatvec-tmp-PID", then ".NAME.chatvec-tmp-PID.N" for the process's
// further ones), then renamed into place by commit() after
// everything in it has been flushed.  If commit() is never reached (an error,
// Ctrl-C), the destructor removes the staging path.  Staging paths left by a
// killed process (SIGKILL, power loss) are removed by the next run that
// writes to the same final path.
#pragma once

#include <string>

namespace chatvec {

class StagedOutput {
 public:
  enum class Kind { Directory, File };
  // Refuses (InputError) when `final_path` exists and `force` is false, or
  // when its parent directory does not exist.
  StagedOutput(std::string final_path, Kind kind, bool force);
  ~StagedOutput();
  StagedOutput(const StagedOutput&) = delete;
  StagedOutput& operator=(const StagedOutput&) = delete;

  // Where to write: a directory (Kind::Directory) or a file path (Kind::File,
  // not yet created).
  const std::string& path() const { return staging_; }
  const std::string& final_path() const { return final_; }
  // The directory holding the final path (for free-space checks).
  const std::string& parent() const { return parent_; }
  // Flush and move into place.  Without force, nothing is ever replaced:
  // when another process created the final path since the constructor's
  // check, commit() throws InputError ("already exists") and the staging
  // path is removed by the destructor.  With force, an existing final path
  // is replaced atomically (concurrent forced runs leave one complete
  // output, the last one committed).
  void commit();

 private:
  void commit_noreplace();
  void commit_replace();
  std::string final_, staging_, parent_;
  Kind kind_;
  bool force_;
  bool committed_ = false;
};

// Tests only: behave as on a file system without renameat2's flags, so that
// the fallbacks of commit() are exercised.
void staging_test_disable_rename2(bool disable);

// rename(2) that never replaces `to` (renameat2 RENAME_NOREPLACE; where the
// kernel or file system lacks the flag, plain rename, which cannot replace a
// non-empty directory either).  0, or -1 with errno (EEXIST: `to` exists).
int rename_noreplace(const std::string& from, const std::string& to);

// Remove a path recursively; errors ignored.
void remove_tree(const std::string& path) noexcept;

}  // namespace chatvec
