#include "formats/hf_cache.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool valid_id_part(std::string_view p) {
  if (p.empty() || !is_word_char(p.front()) || !is_word_char(p.back())) return false;
  for (char c : p)
    if (!is_word_char(c) && c != '-' && c != '.') return false;
  return true;
}

bool valid_revision(std::string_view r) {
  if (r.empty() || r.size() > 255 || r.front() == '/' || r.back() == '/') return false;
  for (char c : r) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == ' ' || c == '~' || c == '^' || c == ':' || c == '?' || c == '*' ||
        c == '[' || c == '\\' || c == '@')
      return false;
  }
  size_t start = 0;
  while (start <= r.size()) {
    size_t end = r.find('/', start);
    if (end == std::string_view::npos) end = r.size();
    const std::string_view comp = r.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    start = end + 1;
  }
  return true;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool is_commit_hash(std::string_view s) { return s.size() == 40 && is_hex(s); }

std::string getenv_nonempty(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string();
}

std::string home_dir() {
  std::string h = getenv_nonempty("HOME");
  if (!h.empty()) return h;
  struct passwd pw;
  struct passwd* res = nullptr;
  char buf[4096];
  if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res && res->pw_dir) return res->pw_dir;
  return "/";
}

// os.path.expanduser for the forms that occur in these variables.
std::string expand_user(const std::string& p) {
  if (p == "~") return home_dir();
  if (p.rfind("~/", 0) == 0) return home_dir() + p.substr(1);
  return p;
}

std::string fetch_hint(const HfModelRef& ref) {
  std::string cmd = "huggingface-cli download " + ref.repo_id;
  if (ref.revision_given) cmd += " --revision " + ref.revision;
  return "fetch it with `" + cmd + "`";
}

std::string where(const HfCacheDir& cache) {
  return cache.source == "default" ? std::string("the default cache") : "the cache set by " + cache.source;
}

std::string spec(const HfModelRef& ref) { return ref.revision_given ? ref.repo_id + "@" + ref.revision : ref.repo_id; }

// A refs/ file: one commit hash (huggingface_hub writes it without a newline;
// surrounding white space is tolerated).
std::optional<std::string> read_ref(const fs::path& p, const HfModelRef& ref) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return std::nullopt;
  std::ifstream in(p, std::ios::binary);
  std::string s(4096, '\0');
  in.read(s.data(), std::streamsize(s.size()));
  s.resize(size_t(in.gcount()));
  const auto b = s.find_first_not_of(" \t\r\n");
  const auto e = s.find_last_not_of(" \t\r\n");
  const std::string h = b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  if (!is_commit_hash(h))
    throw InputError(p.string() + ": the Hugging Face cache ref of " + spec(ref) +
                     " does not hold a commit hash; the cache is damaged, " + fetch_hint(ref) + " again");
  return h;
}

std::vector<std::string> list_names(const fs::path& dir, bool dirs_only, size_t limit) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end && out.size() < limit; it.increment(ec)) {
    if (dirs_only && !it->is_directory(ec)) continue;
    out.push_back(it->path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string join_some(const std::vector<std::string>& v, size_t n, size_t prefix_len) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < n; ++i) {
    if (i) s += ", ";
    s += prefix_len ? v[i].substr(0, prefix_len) : v[i];
  }
  if (v.size() > n) s += ", ...";
  return v.empty() ? "none" : s;
}

}  // namespace

std::optional<HfModelRef> parse_hf_model_ref(std::string_view s) {
  HfModelRef ref;
  std::string_view id = s;
  const size_t at = s.find('@');
  if (at != std::string_view::npos) {
    id = s.substr(0, at);
    const std::string_view rev = s.substr(at + 1);
    if (!valid_revision(rev)) return std::nullopt;
    ref.revision = std::string(rev);
    ref.revision_given = true;
  } else {
    ref.revision = "main";
  }
  if (id.size() > 96 || id.find("--") != std::string_view::npos || id.find("..") != std::string_view::npos)
    return std::nullopt;
  const size_t slash = id.find('/');
  if (slash == std::string_view::npos || id.find('/', slash + 1) != std::string_view::npos) return std::nullopt;
  if (!valid_id_part(id.substr(0, slash)) || !valid_id_part(id.substr(slash + 1))) return std::nullopt;
  if (id.size() >= 4 && id.substr(id.size() - 4) == ".git") return std::nullopt;
  ref.repo_id = std::string(id);
  return ref;
}

HfCacheDir hf_hub_cache_dir() {
  if (std::string v = getenv_nonempty("HF_HUB_CACHE"); !v.empty()) return {expand_user(v), "HF_HUB_CACHE"};
  if (std::string v = getenv_nonempty("HUGGINGFACE_HUB_CACHE"); !v.empty())
    return {expand_user(v), "HUGGINGFACE_HUB_CACHE"};
  if (std::string v = getenv_nonempty("HF_HOME"); !v.empty()) return {expand_user(v) + "/hub", "HF_HOME"};
  if (std::string v = getenv_nonempty("XDG_CACHE_HOME"); !v.empty())
    return {expand_user(v) + "/huggingface/hub", "XDG_CACHE_HOME"};
  return {home_dir() + "/.cache/huggingface/hub", "default"};
}

std::string hf_cache_folder_name(std::string_view repo_id) {
  std::string s = "models--";
  for (char c : repo_id) {
    if (c == '/') s += "--";
    else s += c;
  }
  return s;
}

HfCachedModel resolve_hf_cached_model(const HfModelRef& ref, const HfCacheDir& cache) {
  const fs::path repo = fs::path(cache.path) / hf_cache_folder_name(ref.repo_id);
  std::error_code ec;
  if (!fs::is_directory(repo, ec))
    throw InputError(spec(ref) + ": not a local path, and not in the Hugging Face cache (no " + repo.string() +
                     " in " + where(cache) + "); " + fetch_hint(ref));
  const fs::path snapshots = repo / "snapshots";

  std::optional<std::string> commit = read_ref(repo / "refs" / ref.revision, ref);
  if (!commit && is_commit_hash(ref.revision)) {
    if (fs::is_directory(snapshots / ref.revision, ec)) commit = ref.revision;
  } else if (!commit && ref.revision.size() >= 7 && ref.revision.size() < 40 && is_hex(ref.revision)) {
    std::vector<std::string> hits;
    for (const std::string& name : list_names(snapshots, true, 100000))
      if (is_commit_hash(name) && name.compare(0, ref.revision.size(), ref.revision) == 0) hits.push_back(name);
    if (hits.size() > 1)
      throw InputError(spec(ref) + ": the abbreviated commit " + ref.revision + " matches " +
                       std::to_string(hits.size()) + " cached snapshots of " + repo.string() + " (" +
                       join_some(hits, 4, 12) + "); give more digits");
    if (hits.size() == 1) commit = hits[0];
  }
  if (!commit) {
    std::vector<std::string> refs;
    std::error_code ec2;
    const fs::path refs_dir = repo / "refs";
    for (fs::recursive_directory_iterator it(refs_dir, ec2), end; !ec2 && it != end && refs.size() < 1000;
         it.increment(ec2))
      if (it->is_regular_file(ec2)) refs.push_back(fs::relative(it->path(), refs_dir, ec2).string());
    std::sort(refs.begin(), refs.end());
    const auto snaps = list_names(snapshots, true, 1000);
    throw InputError(spec(ref) + ": revision " + ref.revision + " is not in the Hugging Face cache (" + repo.string() +
                     " has refs: " + join_some(refs, 8, 0) + "; snapshots: " + join_some(snaps, 8, 12) + "); " +
                     fetch_hint(ref));
  }
  const fs::path dir = snapshots / *commit;
  if (!fs::is_directory(dir, ec))
    throw InputError(spec(ref) + ": the Hugging Face cache ref " + ref.revision + " points to commit " + *commit +
                     " but " + dir.string() + " is missing (interrupted download?); " + fetch_hint(ref));

  HfCachedModel m;
  m.dir = dir.string();
  m.repo_id = ref.repo_id;
  m.revision = ref.revision;
  m.commit = *commit;
  m.cache_dir = cache.path;
  size_t seen = 0;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end && seen < 100000; it.increment(ec), ++seen) {
    std::error_code e2;
    if (it->is_symlink(e2) && !fs::exists(it->path(), e2))
      m.broken_links.push_back(fs::relative(it->path(), dir, e2).string());
  }
  std::sort(m.broken_links.begin(), m.broken_links.end());
  return m;
}

ModelSource resolve_model_argument(const std::string& arg, const HfCacheDir& cache) {
  ModelSource s;
  std::error_code ec;
  const auto ref = parse_hf_model_ref(arg);
  if (fs::exists(arg, ec)) {
    s.path = arg;
    // (Said only when the cache does hold a model of that name: most
    // relative paths "dir/model" are shaped like ids.)
    if (ref && fs::is_directory(fs::path(cache.path) / hf_cache_folder_name(ref->repo_id), ec))
      s.note = arg + ": the local " + std::string(fs::is_directory(arg, ec) ? "directory" : "file") +
               " is used, not the Hugging Face model of that name" +
               (ref->revision_given ? std::string() : " (write " + arg + "@main for the cached model)");
    return s;
  }
  if (!ref) {
    s.path = arg;
    return s;
  }
  s.hub = resolve_hf_cached_model(*ref, cache);
  s.path = s.hub->dir;
  return s;
}

ModelSource resolve_model_argument(const std::string& arg) { return resolve_model_argument(arg, hf_hub_cache_dir()); }

}  // namespace chatvec
