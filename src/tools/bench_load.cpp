#include "tools/bench_load.hpp"


#include <algorithm>
#include <cstring>
#include <vector>

#include "base/clock.hpp"
#include "base/cpu.hpp"

namespace vcp::tools::bench {
namespace {

constexpr const char* kPatternNames[] = {"read", "write", "randread", "randwrite", "randrw"};  // enum order

// A seed spread over all 64 bits (splitmix64's finaliser). Seeds come from the clock's
// seconds and the job's number and differ in a few low bits: xorshift started from them
// (seed | 1, which also made two neighbouring seconds one seed) gave runs that began alike,
// and the one seeded at 03:44:52 on 2026-11-29 made its first 11 randrw requests writes at a
// 50% mix (a slow-link test's run then had no read to verify).
uint64_t mix_seed(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z ? z : 1;  // xorshift's one fixed point
}

uint64_t xorshift(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

// Verify stamps: every 512-byte sector of a written block carries a magic word, its own LBA,
// the write's generation, and words derived from both (so a sector written elsewhere, an old
// write or a torn one all show).
constexpr uint64_t kMagic = 0x7663702d62656e63;  // "vcp-benc"
constexpr size_t kWords = 512 / 8;

uint64_t stamp_word(uint64_t lba, uint64_t gen, size_t i) {
  uint64_t x = (lba * 0x9e3779b97f4a7c15) ^ (gen << 20) ^ (i * 0xbf58476d1ce4e5b9);
  x ^= x >> 31;
  return x * 0x94d049bb133111eb;
}

void stamp(uint8_t* p, uint64_t first_lba, uint32_t sectors, uint64_t gen) {
  for (uint32_t s = 0; s < sectors; ++s) {
    auto* w = reinterpret_cast<uint64_t*>(p + size_t{s} * 512);
    const uint64_t lba = first_lba + s;
    w[0] = kMagic;
    w[1] = lba;
    w[2] = gen;
    for (size_t i = 3; i < kWords; ++i) w[i] = stamp_word(lba, gen, i);
  }
}

// Checks one sector. `gen` 0: not written by this run (zeros, or a stamp from an earlier run
// with the right LBA, pass). Returns an empty string or what is wrong.
std::string check_sector(const uint8_t* p, uint64_t lba, uint64_t gen) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  if (gen == 0) {
    bool zero = true;
    for (size_t i = 0; i < kWords && zero; ++i) zero = w[i] == 0;
    if (zero) return {};
    if (w[0] != kMagic) return "neither zeros nor a stamped block";
    gen = w[2];
  }
  if (w[0] != kMagic) return "no stamp (expected generation " + std::to_string(gen) + ")";
  if (w[1] != lba) return "stamp of LBA " + std::to_string(w[1]);
  if (w[2] != gen) return "generation " + std::to_string(w[2]) + ", expected " + std::to_string(gen);
  for (size_t i = 3; i < kWords; ++i)
    if (w[i] != stamp_word(lba, gen, i)) return "corrupt data at byte " + std::to_string(i * 8);
  return {};
}

struct Slot {
  uint8_t* buf = nullptr;
  uint64_t offset = 0;
  uint64_t start_ns = 0;
  uint64_t unit = 0;
  uint32_t gen = 0;
  bool write = false;
};

class Job {
 public:
  Job(EngineQueue& q, const JobConfig& c, JobResult* r) : q_(q), c_(c), r_(r), rng_(mix_seed(c.seed)) {
    units_ = c.region_len / c.bs;
    if (c.verify) {
      gens_.assign(units_, 0);
      busy_.assign(units_, 0);
    }
  }

  bool run(const std::atomic<bool>* stop) {
    if (units_ == 0 || c_.qd == 0) {
      r_->message = "the region holds no whole block of the block size";
      return false;
    }
    uint8_t* mem = q_.buffers(size_t{c_.qd} * c_.bs);
    if (!mem) {
      r_->message = "no buffer memory";
      return false;
    }
    slots_.resize(c_.qd);
    std::vector<EngineQueue::Done> done(c_.qd);
    unsigned outstanding = 0;
    for (unsigned i = 0; i < c_.qd; ++i) {
      slots_[i].buf = mem + size_t{i} * c_.bs;
      if (issue(i)) ++outstanding;
    }
    bool stopping = false;
    while (outstanding > 0) {
      stopping = stopping || stop->load(std::memory_order_relaxed) || r_->verify_failed;
      // A batch only while that many are out: the last few of a stopping run come one by one.
      const int n = q_.reap(done.data(), c_.qd, std::min(c_.batch, outstanding));
      if (n < 0) {
        note_error(n);
        break;  // the engine failed as a whole: nothing more will come back
      }
      const uint64_t t = now_ns();
      for (int k = 0; k < n; ++k) {
        --outstanding;
        complete(done[k], t);
        if (!stopping && !r_->verify_failed && issue(done[k].tag)) ++outstanding;
      }
    }
    return true;
  }

 private:
  uint64_t pick_unit(bool random) {
    uint64_t u = random ? xorshift(&rng_) % units_ : next_seq_++ % units_;
    if (c_.verify) {
      // Two requests in flight on one block would make its expected contents ambiguous.
      for (uint64_t k = 0; k < units_ && busy_[u]; ++k) u = (u + 1) % units_;
      busy_[u] = 1;
    }
    return u;
  }

  bool issue(unsigned i) {
    Slot& s = slots_[i];
    bool write = false, random = true;
    switch (c_.pattern) {
      case Pattern::read: random = false; break;
      case Pattern::write: random = false; write = true; break;
      case Pattern::randread: break;
      case Pattern::randwrite: write = true; break;
      case Pattern::randrw: write = xorshift(&rng_) % 100 >= c_.read_percent; break;
    }
    s.unit = pick_unit(random);
    s.offset = c_.region_start + s.unit * c_.bs;
    s.write = write;
    if (c_.verify && write) {
      s.gen = ++gen_;
      stamp(s.buf, s.offset >> 9, c_.bs >> 9, s.gen);
    }
    s.start_ns = now_ns();
    const int rc = q_.submit(write, s.offset, s.buf, c_.bs, i);
    if (rc < 0) {
      note_error(rc);
      if (c_.verify) busy_[s.unit] = 0;
      return false;
    }
    return true;
  }

  void complete(const EngineQueue::Done& d, uint64_t t) {
    Slot& s = slots_[d.tag];
    r_->hist.add(t - s.start_ns);
    if (d.result < 0) {
      note_error(d.result);
    } else {
      r_->ios.store(r_->ios.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      r_->bytes.store(r_->bytes.load(std::memory_order_relaxed) + c_.bs, std::memory_order_relaxed);
      if (c_.verify) verify(s);
    }
    if (c_.verify) busy_[s.unit] = 0;
  }

  void verify(const Slot& s) {
    if (s.write) {
      gens_[s.unit] = s.gen;
      return;
    }
    const uint64_t lba = s.offset >> 9;
    for (uint32_t k = 0; k < (c_.bs >> 9); ++k) {
      std::string why = check_sector(s.buf + size_t{k} * 512, lba + k, gens_[s.unit]);
      if (why.empty()) continue;
      if (!r_->verify_failed) {
        r_->verify_failed = true;
        r_->message = "LBA " + std::to_string(lba + k) + " (byte offset " + std::to_string((lba + k) * 512) +
                      "): " + why;
      }
      return;
    }
    ++r_->verified_blocks;
  }

  void note_error(int rc) {
    if (r_->errors++ == 0) r_->first_error = rc;
  }

  EngineQueue& q_;
  const JobConfig& c_;
  JobResult* r_;
  uint64_t rng_;
  uint64_t units_ = 0;
  uint64_t next_seq_ = 0;
  uint32_t gen_ = 0;
  std::vector<uint32_t> gens_;  // generation last written per unit (0: not this run)
  std::vector<uint8_t> busy_;
  std::vector<Slot> slots_;
};

}  // namespace

bool parse_pattern(const std::string& s, Pattern* out) {
  for (size_t i = 0; i < std::size(kPatternNames); ++i) {
    if (s != kPatternNames[i]) continue;
    *out = static_cast<Pattern>(i);
    return true;
  }
  return false;
}

const char* to_string(Pattern p) { return kPatternNames[static_cast<size_t>(p)]; }

unsigned Histogram::index(uint64_t ns) {
  if (ns < 16) return static_cast<unsigned>(ns);
  const unsigned msb = 63u - static_cast<unsigned>(__builtin_clzll(ns));
  const unsigned i = (msb - 3) * 16 + static_cast<unsigned>((ns >> (msb - 4)) & 15);
  return i < kBuckets ? i : kBuckets - 1;
}

uint64_t Histogram::lower_bound(unsigned i) {
  if (i < 16) return i;
  const unsigned msb = i / 16 + 3;
  return (16 + uint64_t{i % 16}) << (msb - 4);
}

void Histogram::merge(const Histogram& o) {
  for (unsigned i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
}

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (uint64_t c : counts_) n += c;
  return n;
}

uint64_t Histogram::quantile(double q) const {
  const uint64_t total = count();
  if (total == 0) return 0;
  const auto want = static_cast<uint64_t>(q * double(total - 1)) + 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= want) return (lower_bound(i) + (i + 1 < kBuckets ? lower_bound(i + 1) : lower_bound(i))) / 2;
  }
  return lower_bound(kBuckets - 1);
}

bool run_job(EngineQueue& q, const JobConfig& cfg, const std::atomic<bool>* stop, JobResult* result) {
  if (cfg.cpu >= 0) pin_current_thread(cfg.cpu);
  Job job(q, cfg, result);
  return job.run(stop);
}

}  // namespace vcp::tools::bench
