// Hugging Face cache ids on a cache built by the test, laid out as
// huggingface_hub lays it out: models--org--name/{refs,snapshots,blobs}, the
// snapshot files relative symlinks into blobs/.
#include <unistd.h>

#include <fstream>

#include "core/error.h"
#include "formats/hf_cache.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

const std::string kA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";  // main
const std::string kB = "0badc0de00000000000000000000000000000001";  // tag v1.0, refs/pr/1
const std::string kC = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";  // only by hash
const std::string kD = "a1b2c3d4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";  // shares "a1b2c3d4" with kA

void put(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Sets (or unsets, for nullptr) environment variables for its lifetime.
class EnvGuard {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) setenv(it->first.c_str(), it->second->c_str(), 1);
      else unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

class HfCache : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = {(tmp_ / "hub").string(), "HF_HUB_CACHE"};
    const fs::path repo = tmp_ / "hub" / "models--org--name";
    put(repo / "blobs" / "1111", "{\"v\": 1}");
    put(repo / "blobs" / "2222", "weights");
    put(repo / "blobs" / "3333", "{\"v\": 2}");
    put(repo / "blobs" / "4444", "{\"v\": 3}");
    put(repo / "refs" / "main", kA);  // as huggingface_hub writes it: no newline
    put(repo / "refs" / "v1.0", kB + "\n");
    put(repo / "refs" / "refs" / "pr" / "1", kB);
    link(repo, kA, "config.json", "3333");
    link(repo, kA, "model.safetensors", "2222");
    link(repo, kB, "config.json", "1111");
    link(repo, kB, "model.safetensors", "2222");
    link(repo, kC, "config.json", "4444");
    link(repo, kD, "config.json", "1111");
    link(repo, kD, "sub/tokenizer.json", "gone");  // dangling, in a subfolder
  }
  static void link(const fs::path& repo, const std::string& commit, const std::string& file, const std::string& blob) {
    const fs::path p = repo / "snapshots" / commit / file;
    fs::create_directories(p.parent_path());
    const int depth = int(std::count(file.begin(), file.end(), '/'));
    std::string target = "../../";
    for (int i = 0; i < depth; ++i) target += "../";
    fs::create_symlink(target + "blobs/" + blob, p);
  }
  HfCachedModel resolve(const std::string& spec) {
    auto ref = parse_hf_model_ref(spec);
    EXPECT_TRUE(ref) << spec;
    return resolve_hf_cached_model(*ref, cache_);
  }
  std::string error_of(const std::string& spec) {
    try {
      resolve(spec);
    } catch (const InputError& e) {
      return e.what();
    }
    ADD_FAILURE() << spec << " resolved";
    return "";
  }
  fs::path snap(const std::string& c) const { return tmp_ / "hub" / "models--org--name" / "snapshots" / c; }

  testing::TempDir tmp_;
  HfCacheDir cache_;
};

TEST(HfModelRefParse, IdsAndRevisions) {
  auto r = parse_hf_model_ref("meta-llama/Llama-2-7b-hf");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->repo_id, "meta-llama/Llama-2-7b-hf");
  EXPECT_EQ(r->revision, "main");
  EXPECT_FALSE(r->revision_given);
  r = parse_hf_model_ref("Qwen/Qwen2.5-7B-Instruct@v1.0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->repo_id, "Qwen/Qwen2.5-7B-Instruct");
  EXPECT_EQ(r->revision, "v1.0");
  EXPECT_TRUE(r->revision_given);
  r = parse_hf_model_ref("org/name@refs/pr/1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->revision, "refs/pr/1");
  EXPECT_EQ(hf_cache_folder_name("meta-llama/Llama-2-7b-hf"), "models--meta-llama--Llama-2-7b-hf");

  for (const char* bad : {"", "gpt2", "/abs/path", "a/b/c", "./org/name", "org/", "/name", "org/-name", "org/name.",
                          "or--g/name", "org/na..me", "org/name.git", "org name/x", "org/name@", "org/name@../x",
                          "org/name@a//b", "org/name@x/..", "org/name@/main", "org/name@ma in", "org/name@a:b",
                          "../x", "out/model.safetensors@", "org/na@me@x"})
    EXPECT_FALSE(parse_hf_model_ref(bad)) << bad;
  EXPECT_FALSE(parse_hf_model_ref(std::string(50, 'a') + "/" + std::string(50, 'b')));  // > 96 characters
}

TEST_F(HfCache, DefaultRevisionIsMain) {
  const auto m = resolve("org/name");
  EXPECT_EQ(m.dir, snap(kA).string());
  EXPECT_EQ(m.commit, kA);
  EXPECT_EQ(m.revision, "main");
  EXPECT_EQ(m.repo_id, "org/name");
  EXPECT_EQ(m.cache_dir, cache_.path);
  EXPECT_TRUE(m.broken_links.empty());
  // The files are read through the blob symlinks.
  EXPECT_EQ(slurp(fs::path(m.dir) / "config.json"), "{\"v\": 2}");
  EXPECT_EQ(slurp(fs::path(m.dir) / "model.safetensors"), "weights");
  EXPECT_EQ(resolve("org/name@main").dir, m.dir);
}

TEST_F(HfCache, TwoRevisionsByTagAndPullRequestRef) {
  const auto v1 = resolve("org/name@v1.0");  // its ref ends with a newline
  EXPECT_EQ(v1.commit, kB);
  EXPECT_EQ(v1.revision, "v1.0");
  EXPECT_EQ(slurp(fs::path(v1.dir) / "config.json"), "{\"v\": 1}");
  EXPECT_EQ(resolve("org/name@refs/pr/1").commit, kB);
  EXPECT_NE(v1.dir, resolve("org/name").dir);
}

TEST_F(HfCache, CommitHashFullAndAbbreviated) {
  auto m = resolve("org/name@" + kC);
  EXPECT_EQ(m.commit, kC);
  EXPECT_EQ(m.revision, kC);
  EXPECT_EQ(slurp(fs::path(m.dir) / "config.json"), "{\"v\": 3}");
  m = resolve("org/name@" + kC.substr(0, 7));
  EXPECT_EQ(m.commit, kC);
  EXPECT_EQ(m.revision, kC.substr(0, 7));
  EXPECT_EQ(resolve("org/name@" + kA.substr(0, 9)).commit, kA);
  // Too short to be taken as a hash; shared by two snapshots.
  EXPECT_NE(error_of("org/name@c0ffee").find("revision c0ffee is not in the Hugging Face cache"), std::string::npos);
  const std::string amb = error_of("org/name@a1b2c3d4");
  EXPECT_NE(amb.find("matches 2 cached snapshots"), std::string::npos) << amb;
  // A full hash with no snapshot is a missing revision.
  const std::string full = error_of("org/name@" + std::string(40, 'e'));
  EXPECT_NE(full.find("is not in the Hugging Face cache"), std::string::npos) << full;
}

TEST_F(HfCache, MissingModelSaysWhereAndHowToFetch) {
  const std::string e = error_of("org/other");
  EXPECT_NE(e.find("org/other: not a local path, and not in the Hugging Face cache"), std::string::npos) << e;
  EXPECT_NE(e.find((tmp_ / "hub" / "models--org--other").string()), std::string::npos) << e;
  EXPECT_NE(e.find("HF_HUB_CACHE"), std::string::npos) << e;
  EXPECT_NE(e.find("`huggingface-cli download org/other`"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
}

TEST_F(HfCache, MissingRevisionListsWhatIsCached) {
  const std::string e = error_of("org/name@v9");
  EXPECT_NE(e.find("org/name@v9: revision v9 is not in the Hugging Face cache"), std::string::npos) << e;
  EXPECT_NE(e.find("refs: main, refs/pr/1, v1.0"), std::string::npos) << e;
  EXPECT_NE(e.find("`huggingface-cli download org/name --revision v9`"), std::string::npos) << e;
}

TEST_F(HfCache, DamagedCacheIsReported) {
  const fs::path repo = tmp_ / "hub" / "models--org--name";
  put(repo / "refs" / "broken", "not a hash");
  EXPECT_NE(error_of("org/name@broken").find("does not hold a commit hash"), std::string::npos);
  put(repo / "refs" / "dangling", std::string(40, 'f'));
  const std::string e = error_of("org/name@dangling");
  EXPECT_NE(e.find("points to commit " + std::string(40, 'f')), std::string::npos) << e;
  EXPECT_NE(e.find("is missing"), std::string::npos) << e;
  // A snapshot whose blob is gone: resolved, the file reported.
  const auto m = resolve("org/name@" + kD);
  ASSERT_EQ(m.broken_links.size(), 1u);
  EXPECT_EQ(m.broken_links[0], "sub/tokenizer.json");
}

TEST_F(HfCache, LocalPathWinsOverTheCache) {
  const fs::path cwd = fs::current_path();
  fs::current_path(tmp_.path());
  struct Restore {
    fs::path p;
    ~Restore() { fs::current_path(p); }
  } restore{cwd};

  // Not a local path: through the cache.
  ModelSource s = resolve_model_argument("org/name", cache_);
  ASSERT_TRUE(s.hub);
  EXPECT_EQ(s.path, snap(kA).string());
  EXPECT_TRUE(s.note.empty());
  // A local directory of that name: used, with a note for --dry-run.
  fs::create_directories(tmp_ / "org" / "name");
  s = resolve_model_argument("org/name", cache_);
  EXPECT_FALSE(s.hub);
  EXPECT_EQ(s.path, "org/name");
  EXPECT_NE(s.note.find("org/name: the local directory is used, not the Hugging Face model of that name"),
            std::string::npos)
      << s.note;
  EXPECT_NE(s.note.find("org/name@main"), std::string::npos) << s.note;
  // ...and the revision form still reaches the cache.
  s = resolve_model_argument("org/name@main", cache_);
  ASSERT_TRUE(s.hub);
  EXPECT_EQ(s.hub->commit, kA);
  // A local directory shaped like an id the cache does not hold: no note.
  fs::create_directories(tmp_ / "models" / "mine");
  s = resolve_model_argument("models/mine", cache_);
  EXPECT_FALSE(s.hub);
  EXPECT_EQ(s.path, "models/mine");
  EXPECT_TRUE(s.note.empty()) << s.note;
  // Not id-shaped: a path for the caller to open (and report missing).
  s = resolve_model_argument("no/such/dir", cache_);
  EXPECT_FALSE(s.hub);
  EXPECT_EQ(s.path, "no/such/dir");
  EXPECT_TRUE(s.note.empty());
  // Id-shaped, neither local nor cached: the cache error.
  EXPECT_THROW(resolve_model_argument("org/absent", cache_), InputError);
}

TEST(HfCacheDirEnv, PrecedenceAsHuggingfaceHub) {
  EnvGuard env;
  env.set("HOME", "/home/u");
  env.set("HF_HUB_CACHE", "/c/hub");
  env.set("HUGGINGFACE_HUB_CACHE", "/c/old");
  env.set("HF_HOME", "/c/home");
  env.set("XDG_CACHE_HOME", "/c/xdg");
  auto d = hf_hub_cache_dir();
  EXPECT_EQ(d.path, "/c/hub");
  EXPECT_EQ(d.source, "HF_HUB_CACHE");
  env.set("HF_HUB_CACHE", "");  // empty counts as unset
  d = hf_hub_cache_dir();
  EXPECT_EQ(d.path, "/c/old");
  EXPECT_EQ(d.source, "HUGGINGFACE_HUB_CACHE");
  env.set("HUGGINGFACE_HUB_CACHE", nullptr);
  d = hf_hub_cache_dir();
  EXPECT_EQ(d.path, "/c/home/hub");
  EXPECT_EQ(d.source, "HF_HOME");
  env.set("HF_HOME", "~/hfhome");
  EXPECT_EQ(hf_hub_cache_dir().path, "/home/u/hfhome/hub");
  env.set("HF_HOME", nullptr);
  d = hf_hub_cache_dir();
  EXPECT_EQ(d.path, "/c/xdg/huggingface/hub");
  EXPECT_EQ(d.source, "XDG_CACHE_HOME");
  env.set("XDG_CACHE_HOME", nullptr);
  d = hf_hub_cache_dir();
  EXPECT_EQ(d.path, "/home/u/.cache/huggingface/hub");
  EXPECT_EQ(d.source, "default");
  env.set("HF_HUB_CACHE", "~/x");
  EXPECT_EQ(hf_hub_cache_dir().path, "/home/u/x");
}

TEST_F(HfCache, ResolveUsesTheEnvironment) {
  EnvGuard env;
  env.set("HF_HUB_CACHE", nullptr);
  env.set("HUGGINGFACE_HUB_CACHE", nullptr);
  env.set("HF_HOME", tmp_.path().c_str());  // the cache is tmp/hub
  const ModelSource s = resolve_model_argument("org/name@v1.0");
  ASSERT_TRUE(s.hub);
  EXPECT_EQ(s.hub->commit, kB);
  EXPECT_EQ(s.hub->cache_dir, (tmp_ / "hub").string());
  env.set("HF_HUB_CACHE", (tmp_ / "elsewhere").c_str());  // wins over HF_HOME
  try {
    resolve_model_argument("org/name");
    FAIL() << "resolved in an empty cache";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find((tmp_ / "elsewhere" / "models--org--name").string()), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace chatvec
