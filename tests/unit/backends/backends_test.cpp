// Every backend behind the one interface: the same requests, the same expectations.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <vector>

#include "backends/block_backend.hpp"
#include "backends/factories.hpp"

namespace vcp {
namespace {

struct Done {
  bool done = false;
  int status = 1;
};

void on_done(BlockRequest* r, int status) {
  auto* d = static_cast<Done*>(r->ctx);
  EXPECT_FALSE(d->done) << "completed twice";
  d->done = true;
  d->status = status;
}

// Submits one request and waits (bounded) for its completion.
int run(BackendQueue& q, BlockOp op, uint64_t offset, std::vector<iovec> iov, uint64_t length = 0, bool flag = false) {
  Done d;
  BlockRequest r;
  r.op = op;
  r.offset = offset;
  r.iov = iov.data();
  r.iovcnt = static_cast<uint32_t>(iov.size());
  r.length = length;
  if (!length)
    for (auto& v : iov) r.length += v.iov_len;
  r.fua = op == BlockOp::write && flag;
  r.unmap = op == BlockOp::write_zeroes && flag;
  r.done = on_done;
  r.ctx = &d;
  q.submit(&r);
  q.commit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!d.done && std::chrono::steady_clock::now() < deadline) {
    if (q.poll() == 0 && q.wait_fd() >= 0) {
      pollfd p{q.wait_fd(), POLLIN, 0};
      ::poll(&p, 1, 10);
      uint64_t v;
      (void)!read(q.wait_fd(), &v, sizeof(v));
    }
  }
  EXPECT_TRUE(d.done) << "request never completed";
  EXPECT_EQ(q.in_flight(), 0u);
  return d.status;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vcp-backends-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name, uint64_t size) const {
    std::string p = path_ + "/" + name;
    int fd = open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class DataBackends : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string spec = GetParam();
    if (spec == "file") spec = "file:path=" + dir_.file("disk.img", 8 << 20);
    if (spec == "file-direct") spec = "file:path=" + dir_.file("disk.img", 8 << 20) + ",direct=on";
    std::string err;
    backend_ = make_backend(spec, &err);
    ASSERT_TRUE(backend_) << err;
    auto q = backend_->open_queue(0);
    ASSERT_TRUE(q.ok());
    q_ = std::move(q.value());
  }
  TempDir dir_;
  std::unique_ptr<BlockBackend> backend_;
  std::unique_ptr<BackendQueue> q_;
};

// Page-aligned buffers, so O_DIRECT takes them.
std::vector<uint8_t*> aligned_bufs(size_t n, size_t size, std::vector<std::unique_ptr<uint8_t, decltype(&free)>>* keep) {
  std::vector<uint8_t*> out;
  for (size_t i = 0; i < n; ++i) {
    void* p = nullptr;
    EXPECT_EQ(posix_memalign(&p, 4096, size), 0);
    keep->emplace_back(static_cast<uint8_t*>(p), &free);
    out.push_back(static_cast<uint8_t*>(p));
  }
  return out;
}

// One file backend on a fresh file in its own directory, and its queue.
struct OpenFile {
  explicit OpenFile(const std::string& name, uint64_t size, const std::string& options = "") {
    path = dir.file(name, size);
    std::string err;
    backend = make_backend("file:path=" + path + options, &err);
    EXPECT_TRUE(backend) << err;
    if (!backend) return;
    auto q = backend->open_queue(0);
    EXPECT_TRUE(q.ok());
    if (q.ok()) queue = std::move(q.value());
  }
  TempDir dir;
  std::string path;
  std::unique_ptr<BlockBackend> backend;
  std::unique_ptr<BackendQueue> queue;
};

TEST_P(DataBackends, WriteThenReadScatterGather) {
  const auto& info = backend_->info();
  EXPECT_EQ(info.capacity_bytes % info.block_size, 0u);
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> keep;
  auto b = aligned_bufs(4, 8192, &keep);
  for (int i = 0; i < 8192; ++i) {
    b[0][i] = static_cast<uint8_t>(i * 7);
    b[1][i] = static_cast<uint8_t>(i * 13 + 1);
  }
  ASSERT_EQ(run(*q_, BlockOp::write, 1 << 20, {{b[0], 8192}, {b[1], 4096}}, 0, /*fua=*/true), 0);
  std::memset(b[2], 0xee, 8192);
  std::memset(b[3], 0xee, 8192);
  ASSERT_EQ(run(*q_, BlockOp::read, 1 << 20, {{b[2], 4096}, {b[3], 8192}}), 0);
  EXPECT_EQ(std::memcmp(b[2], b[0], 4096), 0);
  EXPECT_EQ(std::memcmp(b[3], b[0] + 4096, 4096), 0);
  EXPECT_EQ(std::memcmp(b[3] + 4096, b[1], 4096), 0);
  EXPECT_EQ(run(*q_, BlockOp::flush, 0, {}), 0);
}

TEST_P(DataBackends, DiscardAndWriteZeroesReadBackAsZeros) {
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> keep;
  auto b = aligned_bufs(2, 64 << 10, &keep);
  std::memset(b[0], 0x5a, 64 << 10);
  ASSERT_EQ(run(*q_, BlockOp::write, 0, {{b[0], 64 << 10}}), 0);
  ASSERT_EQ(run(*q_, BlockOp::write_zeroes, 4096, {}, 8192), 0);
  ASSERT_EQ(run(*q_, BlockOp::write_zeroes, 16384, {}, 4096, /*unmap=*/true), 0);
  ASSERT_EQ(run(*q_, BlockOp::discard, 32768, {}, 32768), 0);
  ASSERT_EQ(run(*q_, BlockOp::read, 0, {{b[1], 64 << 10}}), 0);
  for (size_t i = 0; i < (64u << 10); ++i) {
    bool zero = (i >= 4096 && i < 12288) || (i >= 16384 && i < 20480) || i >= 32768;
    ASSERT_EQ(b[1][i], zero ? 0 : 0x5a) << "byte " << i;
  }
}

// read_view(): ram and buffered files show their bytes in place (live: a later write shows
// through), bounded by the device; O_DIRECT files have no view.
TEST_P(DataBackends, ReadViewShowsTheBytesInPlace) {
  const uint64_t cap = backend_->info().capacity_bytes;
  if (GetParam() == "file-direct") {
    EXPECT_EQ(q_->read_view(0, 4096), nullptr);
    return;
  }
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> keep;
  auto bufs = aligned_bufs(1, 8192, &keep);
  std::memset(bufs[0], 0x3c, 8192);
  ASSERT_EQ(run(*q_, BlockOp::write, 65536, {{bufs[0], 8192}}), 0);
  const uint8_t* v = q_->read_view(65536, 8192);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(memcmp(v, bufs[0], 8192), 0);
  std::memset(bufs[0], 0xa5, 4096);
  ASSERT_EQ(run(*q_, BlockOp::write, 65536, {{bufs[0], 4096}}), 0);
  EXPECT_EQ(v[0], 0xa5);
  EXPECT_EQ(v[4096], 0x3c);
  EXPECT_NE(q_->read_view(cap - 4096, 4096), nullptr);
  EXPECT_EQ(q_->read_view(cap - 4096, 4097), nullptr);
  EXPECT_EQ(q_->read_view(cap + 1, 0), nullptr);
  EXPECT_EQ(q_->read_view(~uint64_t{0}, 2), nullptr);
}

TEST_P(DataBackends, GetIdIsLeftToTheDeviceModel) { EXPECT_EQ(run(*q_, BlockOp::get_id, 0, {}), -EOPNOTSUPP); }

INSTANTIATE_TEST_SUITE_P(All, DataBackends, ::testing::Values("ram:size=8M", "file", "file-direct"));

TEST(NullBackend, CompletesAtOnceWithoutTouchingData) {
  std::string err;
  auto b = make_backend("null:size=1G", &err);
  ASSERT_TRUE(b) << err;
  EXPECT_EQ(b->info().capacity_bytes, 1ull << 30);
  auto q = b->open_queue(0);
  ASSERT_TRUE(q.ok());
  uint8_t buf[512];
  std::memset(buf, 0x77, sizeof(buf));
  EXPECT_EQ(run(**q, BlockOp::read, 0, {{buf, sizeof(buf)}}), 0);
  EXPECT_EQ(buf[0], 0x77);
}

TEST(FileBackend, ReadOnlyRefusesWrites) {
  TempDir d;
  std::string err;
  auto b = make_backend("file:path=" + d.file("ro.img", 1 << 20) + ",ro=on", &err);
  ASSERT_TRUE(b) << err;
  EXPECT_TRUE(b->info().read_only);
  EXPECT_FALSE(b->info().discard);
  auto q = b->open_queue(0);
  ASSERT_TRUE(q.ok());
  uint8_t buf[4096] = {};
  EXPECT_EQ(run(**q, BlockOp::read, 0, {{buf, sizeof(buf)}}), 0);
  EXPECT_LT(run(**q, BlockOp::write, 0, {{buf, sizeof(buf)}}), 0);
}

// grow(): a file grown since it was opened is taken at its new size (rounded down to whole
// blocks), and the part added reads and writes through a queue opened before; one that shrank
// keeps its capacity (and says so); size= and ram disks keep theirs.
TEST(FileBackend, GrowTakesALargerFile) {
  TempDir d;
  std::string err;
  const std::string path = d.file("grow.img", 1 << 20);
  auto b = make_backend("file:path=" + path, &err);
  ASSERT_TRUE(b) << err;
  auto q = b->open_queue(0);
  ASSERT_TRUE(q.ok());
  bool shrunk = true;
  EXPECT_EQ(b->grow(&shrunk), 1u << 20);
  EXPECT_FALSE(shrunk);
  ASSERT_EQ(truncate(path.c_str(), (2 << 20) + 300), 0);  // not a whole block more
  EXPECT_EQ(b->grow(&shrunk), 2u << 20);
  EXPECT_FALSE(shrunk);
  EXPECT_EQ(b->info().capacity_bytes, 2u << 20);
  uint8_t out[4096], in[4096] = {};
  std::memset(out, 0x5a, sizeof(out));
  const uint64_t past_old_end = (1 << 20) + 8192;
  EXPECT_EQ((*q)->read_view(past_old_end, sizeof(in)), nullptr);  // the mapping stays as it was
  EXPECT_EQ(run(**q, BlockOp::write, past_old_end, {{out, sizeof(out)}}), 0);
  EXPECT_EQ(run(**q, BlockOp::read, past_old_end, {{in, sizeof(in)}}), 0);
  EXPECT_EQ(std::memcmp(in, out, sizeof(in)), 0);
  ASSERT_EQ(truncate(path.c_str(), 1 << 20), 0);
  EXPECT_EQ(b->grow(&shrunk), 2u << 20);
  EXPECT_TRUE(shrunk);

  auto fixed = make_backend("file:path=" + d.file("fixed.img", 1 << 20) + ",size=512K", &err);
  ASSERT_TRUE(fixed) << err;
  EXPECT_EQ(fixed->grow(), 512u << 10);
  auto ram = make_backend("ram:size=1M", &err);
  ASSERT_TRUE(ram) << err;
  EXPECT_EQ(ram->grow(&shrunk), 1u << 20);
  EXPECT_FALSE(shrunk);
}

TEST(FileBackend, ShortReadIsAnErrorNotSuccess) {
  OpenFile f("shrink.img", 1 << 20);
  ASSERT_TRUE(f.queue);
  ASSERT_EQ(truncate(f.path.c_str(), 4096), 0);  // the file shrinks under the VCP
  uint8_t buf[8192];
  EXPECT_EQ(run(*f.queue, BlockOp::read, 0, {{buf, sizeof(buf)}}), -EIO);
}

// Buffered writes are written inline (io_uring would hand each to a worker thread): complete
// before submit() returns, however many buffers they come in.
TEST(FileBackend, BufferedWritesCompleteInlineAcrossManyBuffers) {
  OpenFile f("inline.img", 4 << 20);
  ASSERT_TRUE(f.queue);
  BackendQueue* q = f.queue.get();
  // More buffers than one pwritev takes (IOV_MAX 1024), of odd sizes.
  constexpr size_t kBufs = 1500;
  std::vector<std::vector<uint8_t>> data(kBufs);
  std::vector<iovec> iov;
  uint64_t total = 0;
  for (size_t i = 0; i < kBufs; ++i) {
    data[i].assign(512 + (i % 7) * 64, static_cast<uint8_t>(i * 13 + 1));
    iov.push_back({data[i].data(), data[i].size()});
    total += data[i].size();
  }
  Done done;
  BlockRequest r;
  r.op = BlockOp::write;
  r.offset = 4096;
  r.iov = iov.data();
  r.iovcnt = kBufs;
  r.length = total;
  r.done = on_done;
  r.ctx = &done;
  q->submit(&r);
  EXPECT_TRUE(done.done) << "a buffered write did not complete inline";
  EXPECT_EQ(done.status, 0);
  q->commit();
  EXPECT_EQ(q->in_flight(), 0u);
  std::vector<uint8_t> back(total);
  EXPECT_EQ(run(*q, BlockOp::read, 4096, {{back.data(), back.size()}}), 0);
  size_t at = 0;
  for (size_t i = 0; i < kBufs; ++i) {
    ASSERT_EQ(memcmp(back.data() + at, data[i].data(), data[i].size()), 0) << "buffer " << i;
    at += data[i].size();
  }
}

// RLIMIT_FSIZE lowered for the scope (and SIGXFSZ ignored, so a write past it fails with EFBIG
// rather than killing the test): a file system refusing a write part way, without root.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    if (getrlimit(RLIMIT_FSIZE, &old_) != 0) return;
    saved_ = true;
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit lim = old_;
    lim.rlim_cur = bytes;
    ok_ = setrlimit(RLIMIT_FSIZE, &lim) == 0;
  }
  ~FileSizeLimit() {
    if (!saved_) return;
    setrlimit(RLIMIT_FSIZE, &old_);
    signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
  bool saved_ = false;
  bool ok_ = false;
};

// A write the file system refuses part way (here: past RLIMIT_FSIZE, EFBIG after a short
// write) completes as an error, never as success.
TEST(FileBackend, RefusedInlineWriteIsAnError) {
  OpenFile f("limit.img", 4 << 20);
  ASSERT_TRUE(f.queue);
  BackendQueue* q = f.queue.get();
  std::vector<uint8_t> buf(64 << 10, 0x5a);
  int straddling = 0, beyond = 0;
  {
    FileSizeLimit limit(1 << 20);
    ASSERT_TRUE(limit.ok());
    straddling = run(*q, BlockOp::write, (1 << 20) - 4096, {{buf.data(), buf.size()}});
    beyond = run(*q, BlockOp::write, 2 << 20, {{buf.data(), buf.size()}});
  }
  EXPECT_EQ(straddling, -EFBIG);
  EXPECT_EQ(beyond, -EFBIG);
  EXPECT_EQ(run(*q, BlockOp::write, 0, {{buf.data(), buf.size()}}), 0);
}

// The same through io_uring (FUA writes, O_DIRECT files): the kernel writes the part below the
// limit and returns short; the backend resubmits the rest, which fails with the reason.
class RefusedRingWrite : public ::testing::TestWithParam<bool> {};

TEST_P(RefusedRingWrite, EndsWithTheReasonAfterThePartWritten) {
  const bool direct = GetParam();
  OpenFile f("limit.img", 4 << 20, direct ? ",direct=on" : "");
  ASSERT_TRUE(f.queue);
  BackendQueue* q = f.queue.get();
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> keep;
  auto bufs = aligned_bufs(3, 32 << 10, &keep);
  std::memset(bufs[0], 0x5a, 32 << 10);
  std::memset(bufs[1], 0x6b, 32 << 10);
  int straddling = 0;
  {
    FileSizeLimit limit(1 << 20);
    ASSERT_TRUE(limit.ok());
    // Two buffers, the limit 4 KiB into the first: a short transfer ending inside an iovec.
    straddling =
        run(*q, BlockOp::write, (1 << 20) - 4096, {{bufs[0], 32 << 10}, {bufs[1], 32 << 10}}, 0, /*fua=*/true);
  }
  EXPECT_EQ(straddling, -EFBIG);
  // The part below the limit was written (and so the error came from the resubmitted rest).
  EXPECT_EQ(run(*q, BlockOp::read, (1 << 20) - 4096, {{bufs[2], 4096}}), 0);
  EXPECT_EQ(bufs[2][0], 0x5a);
  EXPECT_EQ(bufs[2][4095], 0x5a);
  EXPECT_EQ(run(*q, BlockOp::write, 0, {{bufs[1], 32 << 10}}, 0, /*fua=*/true), 0);
}

INSTANTIATE_TEST_SUITE_P(FileBackend, RefusedRingWrite, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "Direct" : "BufferedFua"; });

// A request in more buffers than one readv takes goes in parts, and completes whole.
TEST(FileBackend, ReadAcrossManyIovecsCompletesWhole) {
  OpenFile f("many.img", 4 << 20, ",direct=on");
  ASSERT_TRUE(f.queue);
  std::vector<std::unique_ptr<uint8_t, decltype(&free)>> keep;
  auto bufs = aligned_bufs(1, 4 << 20, &keep);
  std::memset(bufs[0], 0x3c, 4 << 20);
  ASSERT_EQ(run(*f.queue, BlockOp::write, 0, {{bufs[0], 4 << 20}}), 0);
  std::memset(bufs[0], 0, 4 << 20);
  // More iovecs than one readv takes (IOV_MAX): the first submission can only be partial.
  std::vector<iovec> iov;
  for (size_t at = 0; at < (4u << 20); at += 2048) iov.push_back({bufs[0] + at, 2048});
  ASSERT_GT(iov.size(), static_cast<size_t>(IOV_MAX));
  EXPECT_EQ(run(*f.queue, BlockOp::read, 0, iov), 0);
  EXPECT_EQ(bufs[0][0], 0x3c);
  EXPECT_EQ(bufs[0][(4 << 20) - 1], 0x3c);
}

// A view of a file that shrank faults for the part that is gone. Handed to the kernel (as the
// target does: send/sendmsg) that is an EFAULT error, never a signal.
TEST(FileBackend, ViewOfAShrunkFileFailsSendsWithEfault) {
  OpenFile f("shrink.img", 1 << 20);
  ASSERT_TRUE(f.queue);
  const uint8_t* v = f.queue->read_view(512 << 10, 64 << 10);
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(truncate(f.path.c_str(), 4096), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  errno = 0;
  EXPECT_EQ(send(sv[0], v, 4096, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EFAULT);
  close(sv[0]);
  close(sv[1]);
}

TEST(Registry, PhysicalBlockSize) {
  // A regular file's, a ram or null disk's: its logical block (a block device's: its physical
  // sector); physical_block_size= sets it (a power of two from block_size to 64K).
  TempDir d;
  std::string err;
  const std::string img = d.file("p.img", 1 << 20);
  auto f = make_backend("file:path=" + img, &err);
  ASSERT_TRUE(f) << err;
  EXPECT_EQ(f->info().physical_block_size, 512u);
  EXPECT_EQ(physical_block_exponent(f->info()), 0);
  f = make_backend("file:path=" + img + ",physical_block_size=4k", &err);
  ASSERT_TRUE(f) << err;
  EXPECT_EQ(f->info().physical_block_size, 4096u);
  EXPECT_EQ(physical_block_exponent(f->info()), 3);
  f = make_backend("file:path=" + img + ",block_size=4k,physical_block_size=16k", &err);
  ASSERT_TRUE(f) << err;
  EXPECT_EQ(f->info().physical_block_size, 16384u);
  EXPECT_EQ(physical_block_exponent(f->info()), 2);
  auto r = make_backend("ram:size=1M", &err);
  ASSERT_TRUE(r) << err;
  EXPECT_EQ(r->info().physical_block_size, 512u);
  EXPECT_EQ(physical_block_exponent(r->info()), 0);
  r = make_backend("null:size=1M,physical_block_size=4096", &err);
  ASSERT_TRUE(r) << err;
  EXPECT_EQ(physical_block_exponent(r->info()), 3);
  for (const char* bad : {"ram:size=1M,physical_block_size=3000", "ram:size=1M,block_size=4k,physical_block_size=512",
                          "ram:size=1M,physical_block_size=128k"}) {
    EXPECT_FALSE(make_backend(bad, &err)) << bad;
    EXPECT_NE(err.find("physical_block_size must be a power of two from block_size"), std::string::npos) << err;
  }
}

TEST(Registry, ClearErrors) {
  TempDir d;
  std::string err;
  EXPECT_FALSE(make_backend("tape:size=1G", &err));
  EXPECT_NE(err.find("unknown backend kind 'tape'"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("ram:size=1G,colour=blue", &err));
  EXPECT_NE(err.find("unknown option 'colour'"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("ram:size=lots", &err));
  EXPECT_NE(err.find("bad size 'lots'"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("ram:size=1G,block_size=1000", &err));
  EXPECT_NE(err.find("power of two"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("ram:size=100", &err));
  EXPECT_NE(err.find("smaller than one block"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file", &err));
  EXPECT_NE(err.find("path="), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file:path=/nonexistent/disk.img", &err));
  EXPECT_NE(err.find("cannot open '/nonexistent/disk.img'"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file:path=" + d.file("e.img", 0), &err));
  EXPECT_NE(err.find("smaller than one block"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file:path=/tmp", &err));
  EXPECT_NE(err.find("Is a directory"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file:path=/dev/null", &err));
  EXPECT_NE(err.find("neither a regular file nor a block device"), std::string::npos) << err;
  EXPECT_FALSE(make_backend("file:path=" + d.file("f.img", 4096) + ",direct=maybe", &err));
  EXPECT_NE(err.find("bad direct"), std::string::npos) << err;
}

TEST(Registry, EachDiskHasASerialOfItsOwn) {
  TempDir d;
  std::string err;
  const std::string a = d.file("a.img", 1 << 20), b = d.file("b.img", 1 << 20);
  auto serial = [&](const std::string& spec) {
    auto be = make_backend(spec, &err);
    EXPECT_TRUE(be) << spec << ": " << err;
    return be ? be->info().serial : std::string();
  };
  // A file: named after the file, the same on every open, whatever path leads to it.
  const std::string sa = serial("file:path=" + a);
  EXPECT_EQ(sa.size(), kSerialMax) << sa;
  EXPECT_EQ(sa.rfind("vcp-", 0), 0u) << sa;
  EXPECT_EQ(serial("file:path=" + a), sa);
  EXPECT_EQ(serial("file:path=" + d.path() + "/./a.img"), sa);
  std::filesystem::create_symlink(a, d.path() + "/link.img");
  EXPECT_EQ(serial("file:path=" + d.path() + "/link.img"), sa);
  EXPECT_NE(serial("file:path=" + b), sa);
  // ram and null: their data lives as long as the process, each is a new disk.
  const std::string r1 = serial("ram:size=1M"), r2 = serial("ram:size=1M");
  EXPECT_EQ(r1.size(), kSerialMax);
  EXPECT_NE(r1, r2);
  EXPECT_NE(serial("null:size=1M"), serial("null:size=1M"));
  // serial= names it: 1 to 20 printable characters.
  EXPECT_EQ(serial("file:path=" + a + ",serial=db-volume-7"), "db-volume-7");
  EXPECT_EQ(serial("ram:size=1M,serial=ABCDEFGHIJKLMNOPQRST"), "ABCDEFGHIJKLMNOPQRST");
  EXPECT_EQ(serial("null:size=1M,serial=n0"), "n0");
  for (const char* bad : {"serial=", "serial=ABCDEFGHIJKLMNOPQRSTU", "serial=a b", "serial=caf\xc3\xa9"}) {
    EXPECT_FALSE(make_backend(std::string("ram:size=1M,") + bad, &err)) << bad;
    EXPECT_NE(err.find("bad serial"), std::string::npos) << err;
  }
  EXPECT_FALSE(make_backend("file:path=" + a + ",serial=", &err));
  EXPECT_NE(err.find("bad serial"), std::string::npos) << err;
}

TEST(Registry, ABlockDeviceIsNamedAfterTheDiskItIs) {
  // A sysfs of the test's making: /sys/dev/block/MAJ:MIN links to the device's directory.
  TempDir d;
  namespace fs = std::filesystem;
  auto put = [&](const std::string& rel, const std::string& value) {
    fs::create_directories(fs::path(d.path() + "/" + rel).parent_path());
    FILE* f = std::fopen((d.path() + "/" + rel).c_str(), "w");
    ASSERT_TRUE(f);
    std::fputs(value.c_str(), f);
    std::fclose(f);
  };
  auto dev = [&](const std::string& majmin, const std::string& dir) {
    fs::create_directories(d.path() + "/dev/block");
    fs::create_directories(d.path() + "/" + dir);
    fs::create_directory_symlink("../../" + dir, d.path() + "/dev/block/" + majmin);
  };
  dev("8:16", "devices/pci0/host0/block/sdb");
  put("devices/pci0/host0/block/sdb/device/wwid", "naa.600a0b80001234560000abcd\n");
  dev("8:17", "devices/pci0/host0/block/sdb/sdb1");
  put("devices/pci0/host0/block/sdb/sdb1/partition", "1\n");
  dev("259:0", "devices/pci1/nvme/nvme0n1");
  put("devices/pci1/nvme/nvme0n1/wwid", "eui.0025388b71b0c0a1\n");
  put("devices/pci1/nvme/nvme0n1/device/wwid", "not this one\n");
  dev("252:0", "devices/virtual/block/vda");
  put("devices/virtual/block/vda/serial", "disk-42\n");
  dev("253:3", "devices/virtual/block/dm-3");
  put("devices/virtual/block/dm-3/serial", "");  // empty: not an identity
  put("devices/virtual/block/dm-3/dm/uuid", "LVM-abcdef\n");
  dev("7:2", "devices/virtual/block/loop2");
  put("devices/virtual/block/loop2/loop/backing_file", "/srv/disk.img\n");
  put("devices/virtual/block/loop2/loop/offset", "1048576\n");
  dev("1:0", "devices/virtual/block/ram0");  // nothing that lasts
  dev("1:1", "devices/virtual/block/ram0/ram0p1");
  put("devices/virtual/block/ram0/ram0p1/partition", "1\n");

  using backends::block_identity;
  const std::string sys = d.path();
  EXPECT_EQ(block_identity(8, 16, sys), "wwid naa.600a0b80001234560000abcd");
  EXPECT_EQ(block_identity(8, 17, sys), "wwid naa.600a0b80001234560000abcd partition 1");
  EXPECT_EQ(block_identity(259, 0, sys), "wwid eui.0025388b71b0c0a1");
  EXPECT_EQ(block_identity(252, 0, sys), "serial disk-42");
  EXPECT_EQ(block_identity(253, 3, sys), "dm LVM-abcdef");
  EXPECT_EQ(block_identity(7, 2, sys), "loop /srv/disk.img at 1048576");
  EXPECT_EQ(block_identity(1, 0, sys), std::nullopt);
  EXPECT_EQ(block_identity(1, 1, sys), std::nullopt);  // a partition of a disk without one
  EXPECT_EQ(block_identity(9, 9, sys), std::nullopt);  // no such device
  // The same disk under another major:minor (found in another order after a reboot) keeps its
  // identity, and so its serial.
  dev("8:32", "devices/pci0/host1/block/sdc");
  put("devices/pci0/host1/block/sdc/device/wwid", "naa.600a0b80001234560000abcd\n");
  EXPECT_EQ(block_identity(8, 32, sys), block_identity(8, 16, sys));
}

TEST(Registry, StorageTellsWhetherTwoBackendsAreOneDisk) {
  TempDir d;
  std::string err;
  const std::string a = d.file("a.img", 1 << 20), b = d.file("b.img", 1 << 20);
  std::filesystem::create_symlink(a, d.path() + "/link.img");
  auto storage = [&](const std::string& spec) {
    auto be = make_backend(spec, &err);
    EXPECT_TRUE(be) << spec << ": " << err;
    return be ? be->info().storage : std::string();
  };
  const std::string sa = storage("file:path=" + a);
  EXPECT_EQ(sa.rfind("file ", 0), 0u) << sa;
  // The same file by any path, with any options: one disk.
  EXPECT_EQ(storage("file:path=" + d.path() + "/link.img"), sa);
  EXPECT_EQ(storage("file:path=" + a + ",ro=on,serial=other"), sa);
  EXPECT_NE(storage("file:path=" + b), sa);
  // ram and null disks: each its own.
  const std::string r1 = storage("ram:size=1M"), r2 = storage("ram:size=1M");
  EXPECT_FALSE(r1.empty());
  EXPECT_NE(r1, r2);
  EXPECT_NE(storage("null:size=1M,serial=n"), storage("null:size=1M,serial=n"));
}

}  // namespace
}  // namespace vcp
