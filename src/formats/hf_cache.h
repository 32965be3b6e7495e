// Models named by Hugging Face id ("org/name", "org/name@revision"), found in
// the local Hugging Face cache.  Nothing is downloaded.
//
// The cache is the hub cache of huggingface_hub, located as huggingface_hub
// locates it (empty variables count as unset):
//   $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its older name), else
//   $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
//   ~/.cache/huggingface/hub                                   (~ expanded)
// Inside it, a model is the directory models--ORG--NAME with
//   refs/REVISION         a file holding a 40-hex commit hash (branches, tags)
//   snapshots/COMMIT/...  the files of that commit, as symlinks into blobs/
//   blobs/SHA             the contents
//
// A revision is a branch or tag (looked up in refs/, which may have slashes:
// refs/pr/1), a full commit hash (snapshots/HASH), or an abbreviated one of at
// least 7 hex digits that names exactly one cached snapshot.  No revision
// means "main", as huggingface_hub.
//
// A model argument that exists as a local path is always that path, even
// when it is also shaped like an id (resolve_model_argument sets `note` so
// that the caller can say so, e.g. in --dry-run); write ./org/name to mean
// the directory, or org/name@main to mean the cached model when a directory
// of the same name is in the way.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chatvec {

struct HfModelRef {
  std::string repo_id;   // "org/name"
  std::string revision;  // as asked; "main" when none was given
  bool revision_given = false;
};

// "org/name" or "org/name@revision" when `s` is shaped like one (the repo id
// rules of huggingface_hub, ASCII: parts of letters, digits, '_', '-', '.',
// starting and ending with a letter, digit or '_', no "--" or "..", at most
// 96 characters; exactly one '/': ids without an organisation are not taken,
// they look too much like local names).  The revision must be a safe relative
// ref name (no empty, "." or ".." component, no control characters, spaces
// or any of ~^:?*[\@).  nullopt otherwise.
std::optional<HfModelRef> parse_hf_model_ref(std::string_view s);

// The hub cache directory, and which variable gave it (for messages).
struct HfCacheDir {
  std::string path;
  std::string source;  // "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME" or "default"
};
HfCacheDir hf_hub_cache_dir();

// "models--org--name", the cache folder of a repo id.
std::string hf_cache_folder_name(std::string_view repo_id);

struct HfCachedModel {
  std::string dir;        // <cache>/models--org--name/snapshots/<commit>: open this
  std::string repo_id;    // "org/name"
  std::string revision;   // as asked ("main" when none)
  std::string commit;     // the 40-hex commit it resolved to (for the model card)
  std::string cache_dir;  // the hub cache searched
  // Files of the snapshot (relative names) whose symlink into blobs/ is
  // dangling: a download was interrupted or the blobs were pruned.
  std::vector<std::string> broken_links;
};

// Find `ref` in the cache `cache`.  Throws InputError, one line saying where
// it looked and the huggingface-cli command that fetches it, when the model
// or the revision is not cached; InputError too when the cache is
// inconsistent (a ref that does not hold a commit hash, a ref to a snapshot
// that is not there, an abbreviated hash matching several snapshots).
HfCachedModel resolve_hf_cached_model(const HfModelRef& ref, const HfCacheDir& cache);

// What a model argument on the command line refers to.
struct ModelSource {
  std::string path;                  // what to open
  std::optional<HfCachedModel> hub;  // set when it came from the cache
  // Non-empty when `path` exists locally and is also the id of a model in
  // the cache:
  // "PATH: the local directory is used, not the Hugging Face model of that name".
  std::string note;
};

// The rule: an existing local path wins; otherwise an id-shaped argument is
// resolved in the cache (throwing as resolve_hf_cached_model when it is not
// there); anything else is returned as a path for the caller to open (and
// report missing).
ModelSource resolve_model_argument(const std::string& arg, const HfCacheDir& cache);
ModelSource resolve_model_argument(const std::string& arg);  // with hf_hub_cache_dir()

}  // namespace chatvec
