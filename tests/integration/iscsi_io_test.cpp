// Drives the iscsi backend in-process against a real target (tgtd, started by tgtd.sh) and
// verifies every byte it reads back.
//
//   iscsi_io_test verify URL               read/write (several sizes and iovec splits, FUA),
//                                          1 MiB I/O at queue depth 8, flush, discard,
//                                          write-zeroes, two queues at once
//   iscsi_io_test load URL SECONDS [QD]    random verified I/O at queue depth QD (16) for
//                                          SECONDS while the script disturbs the target; ends
//                                          with a full verify ("VERIFY OK")
//   iscsi_io_test expect-fail URL TEXT     creating the backend must fail with TEXT in the error
// Exit status 0 only when everything checked out.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "base/log.hpp"

using namespace vcp;

namespace {

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "iscsi_io_test: FAIL: %s\n", why.c_str());
  std::exit(1);
}

struct Io {
  BlockRequest req;
  std::vector<iovec> iov;
  int status = 1;
  bool busy = false;
};

void on_done(BlockRequest* r, int status) {
  auto* io = static_cast<Io*>(r->ctx);
  io->status = status;
  io->busy = false;
}

// Waits until the queue has fewer than `below` requests in flight.
void drive(BackendQueue& q, uint32_t below, int timeout_s = 120) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  q.commit();
  while (q.in_flight() >= below) {
    if (q.poll() > 0) continue;
    if (std::chrono::steady_clock::now() > until) fail("requests did not complete in time");
    pollfd p{q.wait_fd(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      uint64_t v;
      (void)!::read(q.wait_fd(), &v, sizeof v);
    }
  }
}

// Splits buf into iovecs of irregular sizes (multiples of 512) to exercise offsets.
std::vector<iovec> split(uint8_t* buf, size_t len, unsigned seed) {
  std::vector<iovec> v;
  std::mt19937 rng(seed);
  size_t off = 0;
  while (off < len) {
    size_t n = std::min<size_t>(len - off, 512 * (1 + rng() % 24));
    v.push_back({buf + off, n});
    off += n;
  }
  return v;
}

int run_one(BackendQueue& q, BlockOp op, uint64_t off, uint8_t* buf, size_t len, bool fua = false,
            bool unmap = false, bool many_iov = true) {
  Io io;
  if (buf) io.iov = many_iov ? split(buf, len, static_cast<unsigned>(off + len)) : std::vector<iovec>{{buf, len}};
  io.req.op = op;
  io.req.fua = fua;
  io.req.unmap = unmap;
  io.req.offset = off;
  io.req.length = len;
  io.req.iov = io.iov.data();
  io.req.iovcnt = static_cast<uint32_t>(io.iov.size());
  io.req.done = on_done;
  io.req.ctx = &io;
  io.busy = true;
  q.submit(&io.req);
  drive(q, 1);
  if (io.busy) fail("request still busy");
  return io.status;
}

void fill(std::vector<uint8_t>& b, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < b.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&b[i], &v, std::min<size_t>(8, b.size() - i));
  }
}

void expect_ok(int rc, const std::string& what) {
  if (rc != 0) fail(what + ": " + errno_str(rc));
}

std::unique_ptr<BlockBackend> open_backend(const std::string& url) {
  std::string err;
  auto b = make_backend(url, &err);
  if (!b) fail("make_backend: " + err);
  const auto& i = b->info();
  std::printf("backend: %s, %llu bytes, block %u, max transfer %u, discard %d, write_zeroes %d, serial '%s'\n",
              i.description.c_str(), static_cast<unsigned long long>(i.capacity_bytes), i.block_size,
              i.max_transfer_bytes, i.discard, i.write_zeroes, i.serial.c_str());
  return b;
}

std::unique_ptr<BackendQueue> open_queue(BlockBackend& b, unsigned idx) {
  auto q = b.open_queue(idx);
  if (!q) fail("open_queue: " + errno_str(q.error()));
  return std::move(q.value());
}

void check_same(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, const std::string& what) {
  if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size()) != 0) {
    size_t i = 0;
    while (i < a.size() && a[i] == b[i]) ++i;
    fail(what + ": data differs at byte " + std::to_string(i));
  }
}

int verify(const std::string& url) {
  auto b = open_backend(url);
  const auto& info = b->info();
  auto q = open_queue(*b, 0);
  const uint64_t cap = info.capacity_bytes;

  // Sizes from one block to 1 MiB, at offsets across the disk, with irregular iovecs.
  const size_t sizes[] = {512, 4096, 8192 + 512, 65536, 262144 + 4096, 1 << 20};
  uint64_t seed = 1;
  for (size_t sz : sizes) {
    for (uint64_t off : {uint64_t{0}, cap / 3 / 512 * 512, cap - sz}) {
      std::vector<uint8_t> w(sz), r(sz, 0xee);
      fill(w, seed++);
      expect_ok(run_one(*q, BlockOp::write, off, w.data(), sz, seed % 2 == 0), "write " + std::to_string(sz));
      expect_ok(run_one(*q, BlockOp::read, off, r.data(), sz), "read " + std::to_string(sz));
      check_same(w, r, "read-back of " + std::to_string(sz) + " bytes at " + std::to_string(off));
    }
  }
  std::printf("read/write verified: sizes 512 B .. 1 MiB, FUA on every other write\n");

  // 1 MiB requests at queue depth 8: writes, then reads, all verified.
  {
    const size_t sz = 1 << 20;
    const int qd = 8;
    std::vector<std::vector<uint8_t>> w(qd, std::vector<uint8_t>(sz)), r(qd, std::vector<uint8_t>(sz));
    std::vector<Io> ios(qd);
    for (int pass = 0; pass < 2; ++pass) {
      for (int i = 0; i < qd; ++i) {
        auto& io = ios[i];
        if (pass == 0) fill(w[i], 1000 + i);
        uint8_t* buf = pass == 0 ? w[i].data() : r[i].data();
        io.iov = split(buf, sz, 77 + i);
        io.req = {};
        io.req.op = pass == 0 ? BlockOp::write : BlockOp::read;
        io.req.offset = uint64_t(i) * sz;
        io.req.length = sz;
        io.req.iov = io.iov.data();
        io.req.iovcnt = static_cast<uint32_t>(io.iov.size());
        io.req.done = on_done;
        io.req.ctx = &io;
        io.busy = true;
        q->submit(&io.req);
      }
      drive(*q, 1);
      for (int i = 0; i < qd; ++i) expect_ok(ios[i].status, "1 MiB qd 8 request");
    }
    for (int i = 0; i < qd; ++i) check_same(w[i], r[i], "1 MiB qd 8 read-back");
    std::printf("1 MiB x 8 in flight: verified\n");
  }

  expect_ok(run_one(*q, BlockOp::flush, 0, nullptr, 0), "flush");
  std::printf("flush: ok\n");

  // Write-zeroes, with and without the unmap hint.
  for (bool unmap : {false, true}) {
    const size_t sz = 128 * 1024;
    const uint64_t off = 8 << 20;
    std::vector<uint8_t> w(sz), r(sz, 0xee), z(sz, 0);
    fill(w, 555);
    expect_ok(run_one(*q, BlockOp::write, off, w.data(), sz), "write before write-zeroes");
    int rc = run_one(*q, BlockOp::write_zeroes, off, nullptr, sz, false, unmap);
    expect_ok(rc, std::string("write-zeroes") + (unmap ? " (unmap)" : ""));
    expect_ok(run_one(*q, BlockOp::read, off, r.data(), sz), "read after write-zeroes");
    check_same(z, r, "write-zeroes");
  }
  std::printf("write-zeroes (WRITE SAME 16, with and without UNMAP): verified\n");

  if (!info.discard) fail("the LUN has thin provisioning on: discard should be available");
  {
    const size_t sz = 1 << 20;
    const uint64_t off = 16 << 20;
    std::vector<uint8_t> w(sz), r(sz, 0xee), z(sz, 0);
    fill(w, 777);
    expect_ok(run_one(*q, BlockOp::write, off, w.data(), sz), "write before discard");
    expect_ok(run_one(*q, BlockOp::discard, off, nullptr, sz), "discard (UNMAP)");
    expect_ok(run_one(*q, BlockOp::read, off, r.data(), sz), "read after discard");
    check_same(z, r, "discarded range reads zeros (LBPRZ)");
  }
  std::printf("discard (UNMAP): verified\n");

  // A second queue: its own session, at the same time as the first.
  {
    auto q2 = open_queue(*b, 1);
    std::vector<uint8_t> w(65536), r(65536);
    fill(w, 999);
    expect_ok(run_one(*q2, BlockOp::write, 32 << 20, w.data(), w.size()), "queue 1 write");
    expect_ok(run_one(*q, BlockOp::read, 32 << 20, r.data(), r.size()), "queue 0 read");
    check_same(w, r, "write on queue 1, read on queue 0");
  }
  std::printf("two queues: verified\nVERIFY OK\n");
  return 0;
}

// Random verified load. Each 4 KiB block has a version; its content is a function of
// (block, version). Requests never overlap blocks in flight, so the model is exact.
int load(const std::string& url, int seconds, int qd) {
  auto b = open_backend(url);
  auto q = open_queue(*b, 0);
  const uint64_t bs = 4096;
  const uint64_t nblocks = std::min<uint64_t>(b->info().capacity_bytes / bs, 8192);
  std::vector<uint32_t> version(nblocks, 0);
  std::vector<uint8_t> busy(nblocks, 0);
  auto content = [&](uint64_t blk, uint32_t ver, uint8_t* out) {
    if (ver == 0) {
      std::memset(out, 0, bs);
      return;
    }
    std::mt19937_64 rng(blk * 1000003 + ver);
    for (size_t i = 0; i < bs; i += 8) {
      uint64_t v = rng();
      std::memcpy(out + i, &v, 8);
    }
  };
  constexpr uint64_t kMaxBlocks = 16;
  struct Slot {
    Io io;
    std::vector<uint8_t> buf = std::vector<uint8_t>(kMaxBlocks * 4096);
    uint64_t first = 0, count = 0;
    uint32_t new_version = 0;
    bool write = false;
    bool active = false;
  };
  std::vector<Slot> slots(static_cast<size_t>(qd));
  std::mt19937_64 rng(42);
  uint64_t done_ops = 0, errors = 0;
  uint32_t next_version = 1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  auto last_report = std::chrono::steady_clock::now();
  std::vector<uint8_t> expect(kMaxBlocks * bs);

  auto finish = [&](Slot& s) {
    if (s.io.status != 0) {
      ++errors;
      std::fprintf(stderr, "load: %s of %llu blocks at %llu failed: %s\n", s.write ? "write" : "read",
                   (unsigned long long)s.count, (unsigned long long)s.first, errno_str(s.io.status).c_str());
    } else if (s.write) {
      for (uint64_t i = 0; i < s.count; ++i) version[s.first + i] = s.new_version;
    } else {
      for (uint64_t i = 0; i < s.count; ++i) {
        content(s.first + i, version[s.first + i], &expect[i * bs]);
        if (std::memcmp(&expect[i * bs], &s.buf[i * bs], bs) != 0) {
          std::fprintf(stderr, "load: block %llu (version %u) reads wrong data\n",
                       (unsigned long long)(s.first + i), version[s.first + i]);
          ++errors;
        }
      }
    }
    for (uint64_t i = 0; i < s.count; ++i) busy[s.first + i] = 0;
    s.active = false;
    ++done_ops;
  };

  while (std::chrono::steady_clock::now() < deadline) {
    for (auto& s : slots) {
      if (s.active && !s.io.busy) finish(s);
      if (s.active) continue;
      uint64_t count = 1 + rng() % kMaxBlocks;
      uint64_t first = rng() % (nblocks - count);
      bool free_range = true;
      for (uint64_t i = 0; i < count; ++i) free_range = free_range && !busy[first + i];
      if (!free_range) continue;
      for (uint64_t i = 0; i < count; ++i) busy[first + i] = 1;
      s.first = first;
      s.count = count;
      s.write = rng() % 2 == 0;
      if (s.write) {
        s.new_version = next_version++;
        for (uint64_t i = 0; i < count; ++i) content(first + i, s.new_version, &s.buf[i * bs]);
      }
      s.io.iov = {{s.buf.data(), count * bs}};
      s.io.req = {};
      s.io.req.op = s.write ? BlockOp::write : BlockOp::read;
      s.io.req.offset = first * bs;
      s.io.req.length = count * bs;
      s.io.req.iov = s.io.iov.data();
      s.io.req.iovcnt = 1;
      s.io.req.done = on_done;
      s.io.req.ctx = &s.io;
      s.io.busy = true;
      s.active = true;
      q->submit(&s.io.req);
    }
    q->commit();
    if (q->poll() == 0) {
      pollfd p{q->wait_fd(), POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        uint64_t v;
        (void)!::read(q->wait_fd(), &v, sizeof v);
      }
    }
    auto now = std::chrono::steady_clock::now();
    if (now - last_report > std::chrono::seconds(1)) {
      std::fprintf(stderr, "load: %llu ops done, %u in flight, %llu errors\n", (unsigned long long)done_ops,
                   q->in_flight(), (unsigned long long)errors);
      last_report = now;
    }
  }
  drive(*q, 1, 120);
  for (auto& s : slots)
    if (s.active) finish(s);
  // Full verify of every block, read back in 64 KiB pieces.
  std::vector<uint8_t> buf(kMaxBlocks * bs);
  for (uint64_t blk = 0; blk < nblocks; blk += kMaxBlocks) {
    uint64_t n = std::min(kMaxBlocks, nblocks - blk);
    expect_ok(run_one(*q, BlockOp::read, blk * bs, buf.data(), n * bs, false, false, false), "verify read");
    for (uint64_t i = 0; i < n; ++i) {
      content(blk + i, version[blk + i], &expect[0]);
      if (std::memcmp(&expect[0], &buf[i * bs], bs) != 0) {
        std::fprintf(stderr, "verify: block %llu (version %u) wrong\n", (unsigned long long)(blk + i),
                     version[blk + i]);
        ++errors;
      }
    }
  }
  std::printf("load: %llu operations, %llu errors\n", (unsigned long long)done_ops, (unsigned long long)errors);
  if (errors) fail("load run saw errors");
  if (done_ops < 100) fail("load run did too little I/O");
  std::printf("VERIFY OK\n");
  return 0;
}

int expect_fail(const std::string& url, const std::string& text) {
  std::string err;
  auto b = make_backend(url, &err);
  if (b) fail("make_backend succeeded; expected an error containing '" + text + "'");
  std::printf("error (as expected): %s\n", err.c_str());
  if (err.find(text) == std::string::npos) fail("the error does not say '" + text + "'");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: iscsi_io_test verify|load|expect-fail URL [SECONDS [QD]|TEXT]\n");
    return 2;
  }
  std::string mode = argv[1], url = argv[2];
  if (mode == "verify") return verify(url);
  if (mode == "load" && (argc == 4 || argc == 5)) {
    const int qd = argc == 5 ? std::atoi(argv[4]) : 16;
    if (qd < 1 || qd > 1024) {
      std::fprintf(stderr, "iscsi_io_test: QD must be 1..1024\n");
      return 2;
    }
    return load(url, std::atoi(argv[3]), qd);
  }
  if (mode == "expect-fail" && argc == 4) return expect_fail(url, argv[3]);
  std::fprintf(stderr, "iscsi_io_test: bad arguments\n");
  return 2;
}
