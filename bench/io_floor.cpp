// The I/O floor of a merge: read every input byte and write as many output
// bytes as the merge writes, with no arithmetic.  A merge cannot be faster
// than this on the same machine (except by reading less), so chatvec's wall
// time is reported as a ratio to it.
//
//   chatvec_io_floor --out FILE --bytes N [--chunk BYTES] [--flush-behind] [--prefetch BYTES] A1 A2.. -- B1 B2.. -- C1..
//
// Each model (its shard files, in order) is one stream; the streams are read
// with plain read() in lockstep, one chunk of each in
// turn (the order in which a merge consumes base, chat and target); the
// output is written with write() from the last buffer read, and fsync'ed at
// the end, as chatvec fsyncs each shard.  With --flush-behind the output's
// write-back is started every 64 MB and the previous window waited for and
// dropped from the cache (chatvec's own pattern), which on some disks is
// faster than letting dirty pages pile up until the fsync.  With --prefetch
// each stream asks the kernel (POSIX_FADV_WILLNEED) for that many bytes ahead
// of its reads, as chatvec asks for its inputs ahead (madvise WILLNEED).
// Exit status 0 on success.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "chatvec_io_floor: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

uint64_t parse_u64(const char* s) {
  char* end = nullptr;
  uint64_t v = std::strtoull(s, &end, 10);
  if (!end || *end) {
    std::fprintf(stderr, "chatvec_io_floor: bad number \"%s\"\n", s);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  uint64_t out_bytes = 0;
  uint64_t chunk = 16ull << 20;
  bool flush_behind = false;
  uint64_t prefetch = 0;  // bytes asked ahead of each read (POSIX_FADV_WILLNEED)
  // Each stream is one model's files, read in order; "--" separates models.
  std::vector<std::vector<std::string>> streams(1);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out = argv[++i];
    else if (a == "--bytes" && i + 1 < argc) out_bytes = parse_u64(argv[++i]);
    else if (a == "--chunk" && i + 1 < argc) chunk = parse_u64(argv[++i]);
    else if (a == "--flush-behind") flush_behind = true;
    else if (a == "--prefetch" && i + 1 < argc) prefetch = parse_u64(argv[++i]);
    else if (a == "--") streams.emplace_back();
    else streams.back().push_back(a);
  }
  std::erase_if(streams, [](const auto& s) { return s.empty(); });
  if (out.empty() || streams.empty() || chunk == 0) {
    std::fprintf(stderr, "usage: chatvec_io_floor --out FILE --bytes N [--chunk BYTES] [--flush-behind] [--prefetch BYTES] A1 A2.. [-- B1 B2.. [-- ...]]\n");
    return 2;
  }

  struct Stream {
    std::vector<std::string> files;
    size_t next = 0;
    int fd = -1;
    uint64_t pos = 0, asked = 0;  // in the open file
    bool done = false;
  };
  std::vector<Stream> ss;
  for (auto& f : streams) ss.push_back(Stream{f});
  auto open_next = [](Stream& s) {
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
    if (s.next >= s.files.size()) {
      s.done = true;
      return;
    }
    const std::string& p = s.files[s.next++];
    s.pos = s.asked = 0;
    s.fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd < 0) die(p);
    ::posix_fadvise(s.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  };
  for (auto& s : ss) open_next(s);

  int ofd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (ofd < 0) die(out);

  std::vector<char> buf(chunk);
  uint64_t read_total = 0, written = 0, flushed = 0;
  auto all_done = [&] {
    for (auto& s : ss)
      if (!s.done) return false;
    return true;
  };
  auto write_bytes = [&](uint64_t want) {
    while (want > 0) {
      size_t n = size_t(std::min<uint64_t>(want, chunk));
      const char* p = buf.data();
      while (n > 0) {
        ssize_t w = ::write(ofd, p, n);
        if (w < 0) {
          if (errno == EINTR) continue;
          die(out);
        }
        p += w;
        n -= size_t(w);
        written += uint64_t(w);
        want -= uint64_t(w);
      }
      // --flush-behind: keep write-back going and the dirty set small, as
      // chatvec's OutputFile::flush_behind does (64 MB windows).
      constexpr uint64_t kWindow = 64ull << 20;
      if (flush_behind && written - flushed >= kWindow) {
        ::sync_file_range(ofd, off_t(flushed), off_t(written - flushed), SYNC_FILE_RANGE_WRITE);
        if (flushed >= kWindow) {
          ::sync_file_range(ofd, 0, off_t(flushed),
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
          ::posix_fadvise(ofd, 0, off_t(flushed), POSIX_FADV_DONTNEED);
        }
        flushed = written;
      }
    }
  };
  while (!all_done()) {
    // One chunk of each model in turn, then one chunk of output: the merge's
    // access pattern.
    for (auto& s : ss) {
      uint64_t got = 0;
      while (!s.done && got < chunk) {
        if (prefetch && s.asked < s.pos + prefetch) {
          const uint64_t from = std::max(s.asked, s.pos);
          ::posix_fadvise(s.fd, off_t(from), off_t(s.pos + prefetch - from), POSIX_FADV_WILLNEED);
          s.asked = s.pos + prefetch;
        }
        ssize_t r = ::read(s.fd, buf.data() + got, chunk - got);
        if (r < 0) {
          if (errno == EINTR) continue;
          die(s.files[s.next - 1]);
        }
        if (r == 0) {
          open_next(s);
          continue;
        }
        got += uint64_t(r);
        s.pos += uint64_t(r);
      }
      read_total += got;
    }
    write_bytes(std::min<uint64_t>(chunk, out_bytes - written));
  }
  write_bytes(out_bytes - written);  // output larger than the largest input
  if (::fsync(ofd) != 0) die(out + ": fsync");
  if (::close(ofd) != 0) die(out + ": close");
  std::fprintf(stderr, "chatvec_io_floor: read %llu bytes from %zu models, wrote %llu bytes\n",
               (unsigned long long)read_total, ss.size(), (unsigned long long)written);
  return 0;
}
