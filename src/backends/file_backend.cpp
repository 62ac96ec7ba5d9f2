// file: a regular file or a block device, driven through io_uring (one ring per queue thread).
//
// Reads and writes are readv/writev straight from and into the request's buffers (the client's
// shared memory: no copy). FUA writes carry RWF_DSYNC; flush is fdatasync; discard punches a
// hole and write-zeroes uses FALLOC_FL_ZERO_RANGE (files) or BLKDISCARD/BLKZEROOUT semantics
// through fallocate on block devices. A short transfer is resubmitted for the rest, so the
// request ends with the error that stopped it (ENOSPC, EFBIG) or, when the rest transfers nothing
// (the file shrank under us), with EIO: never with success.
//
// Buffered writes (no direct=on) are written inline, on the submitting thread, while that stays
// fast (under 1 ms each). io_uring cannot start a buffered write to ext4 without blocking, so
// it hands every one to an io-wq worker thread: a wake-up and two context switches per write,
// which cost more than the copy into the page cache itself (about 40% of a target's CPU per
// 4 KiB write, measured with perf). A write that blocks anyway (dirty-page throttling, a page
// not in memory, a full journal) is noticed by its duration: from then on writes go through
// io_uring again for a while, so a throttled file cannot stall the thread's other work long.
//
// A buffered file is also mapped read-only (MAP_SHARED) for read_view(): the iSCSI target
// sends Data-In straight from the page cache through it (block_backend.hpp says the rules).
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "backends/factories.hpp"
#include "base/clock.hpp"
#include "base/log.hpp"
#include "base/mapping.hpp"
#include "base/unique_fd.hpp"

namespace vcp::backends {
namespace {

constexpr unsigned kRingEntries = 1024;
// An inline write slower than kInlineSlowNs plus a nanosecond per byte (a page cache copy runs
// at several GB/s) blocked on something: writes go through io_uring (and its worker threads)
// for kInlinePauseFactor times as long as it took, so the thread spends at most about a tenth
// of its time blocked in writes (ext4 blocks a writer now and then for its journal, and for
// long under dirty-page throttling). 1 ms: with 200 us, 33 writes in a 1.35 s run of 4 KiB
// writes (median 223 us: the thread preempted, not blocked) sent 7% of the run to the workers.
constexpr uint64_t kInlineSlowNs = 1'000'000;
constexpr uint64_t kInlinePauseFactor = 10;

// The size in bytes of a regular file or block device; nullopt (and *why, if given) if it is
// neither or cannot be read.
std::optional<uint64_t> device_size(int fd, std::string* why) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    if (why) *why = "cannot be stat'ed: " + errno_str(errno);
    return std::nullopt;
  }
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (!S_ISBLK(st.st_mode)) {
    if (why) *why = "is neither a regular file nor a block device";
    return std::nullopt;
  }
  uint64_t bytes = 0;
  if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
    if (why) *why = "has a size that cannot be read: " + errno_str(errno);
    return std::nullopt;
  }
  return bytes;
}

class FileQueue final : public BackendQueue {
 public:
  ~FileQueue() override {
    if (inline_pauses_) VCP_LOG_DEBUG("file backend: inline writes paused {} times", inline_pauses_);
    // Requests still in the kernel would complete into freed memory: wait for them.
    while (in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring_, &cqe) < 0) break;
      reap();
    }
    io_uring_queue_exit(&ring_);
  }

  int init(int fd, bool flush_is_noop, bool inline_writes, const Mapping* view) {
    fd_ = fd;
    view_ = view;
    flush_is_noop_ = flush_is_noop;
    inline_writes_ = inline_writes;
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = kRingEntries * 2;
    int rc = io_uring_queue_init_params(kRingEntries, &ring_, &p);
    if (rc < 0) return rc;
    efd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!efd_) return -errno;
    return io_uring_register_eventfd(&ring_, efd_.get());
  }

  void submit(BlockRequest* req) override {
    if (req->op == BlockOp::get_id) {  // the device model answers GET_ID itself
      req->done(req, -EOPNOTSUPP);
      return;
    }
    // FUA writes wait for the device: never inline.
    if (req->op == BlockOp::write && !req->fua && inline_writes_ && try_write_inline(req)) return;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      // The ring is sized above the most requests a queue can have in flight; if it is full
      // anyway, hand what is queued to the kernel and take a fresh entry.
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
      if (!sqe) {
        req->done(req, -EAGAIN);
        return;
      }
    }
    // More buffers than one readv/writev takes (IOV_MAX) go in parts: the first IOV_MAX now, the
    // rest as for any short transfer (reap()).
    const unsigned iovcnt = std::min<unsigned>(req->iovcnt, IOV_MAX);
    switch (req->op) {
      case BlockOp::read:
        io_uring_prep_readv(sqe, fd_, req->iov, iovcnt, req->offset);
        break;
      case BlockOp::write:
        io_uring_prep_writev2(sqe, fd_, req->iov, iovcnt, req->offset, req->fua ? RWF_DSYNC : 0);
        break;
      case BlockOp::flush:
        if (flush_is_noop_) {
          io_uring_prep_nop(sqe);
        } else {
          io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        }
        break;
      case BlockOp::discard:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, req->offset, req->length);
        break;
      case BlockOp::write_zeroes:
        io_uring_prep_fallocate(sqe, fd_,
                                (req->unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE,
                                req->offset, req->length);
        break;
      case BlockOp::get_id:
        break;  // handled above
    }
    io_uring_sqe_set_data(sqe, req);
    ++unsubmitted_;
    ++in_flight_;
  }

  void commit() override {
    if (unsubmitted_ == 0) return;
    int rc = io_uring_submit(&ring_);
    if (rc < 0) VCP_LOG_ERROR("file backend: io_uring_submit: {}", errno_str(rc));
    unsubmitted_ = 0;
  }

  int poll() override { return reap(); }
  int wait_fd() const override { return efd_.get(); }
  const uint8_t* read_view(uint64_t offset, uint64_t length) const override {
    if (!view_ || offset > view_->size() || length > view_->size() - offset) return nullptr;
    return view_->data() + offset;
  }
  int read_view_fd() const override { return view_ ? fd_ : -1; }
  uint32_t in_flight() const override { return in_flight_; }

 private:
  // Writes req inline and completes it; false (nothing done) while inline writes are paused.
  bool try_write_inline(BlockRequest* req) {
    const uint64_t t0 = now_ns();
    if (t0 < inline_resume_ns_) return false;
    uint64_t off = req->offset;
    uint64_t left = req->length;
    uint32_t idx = 0;   // the first iovec not wholly written
    size_t skip = 0;    // bytes of iov[idx] already written
    int status = 0;
    while (left > 0 && idx < req->iovcnt) {
      // A partly written iovec goes alone; otherwise all the rest at once.
      iovec part{static_cast<char*>(req->iov[idx].iov_base) + skip, req->iov[idx].iov_len - skip};
      const iovec* v = skip ? &part : req->iov + idx;
      const int n = skip ? 1 : static_cast<int>(std::min<uint32_t>(req->iovcnt - idx, IOV_MAX));
      const ssize_t w = pwritev(fd_, v, n, static_cast<off_t>(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        status = -errno;
        break;
      }
      if (w == 0) break;  // nothing written and no error: reported as an I/O error below
      off += static_cast<uint64_t>(w);
      left -= std::min<uint64_t>(left, static_cast<uint64_t>(w));
      size_t done = static_cast<size_t>(w);
      while (done > 0 && idx < req->iovcnt) {
        const size_t rest = req->iov[idx].iov_len - skip;
        if (done >= rest) {
          done -= rest;
          ++idx;
          skip = 0;
        } else {
          skip += done;
          done = 0;
        }
      }
    }
    if (status == 0 && left > 0) status = -EIO;
    const uint64_t t1 = now_ns();
    if (t1 - t0 > kInlineSlowNs + req->length) {
      inline_resume_ns_ = t1 + (t1 - t0) * kInlinePauseFactor;
      ++inline_pauses_;
      VCP_LOG_DEBUG("file backend: a {}-byte write took {} us inline; writes go through io_uring for {} us",
                    req->length, (t1 - t0) / 1000, (t1 - t0) * kInlinePauseFactor / 1000);
    }
    req->done(req, status);
    return true;
  }

  // The rest of a read or write the kernel did part of: its own iovecs, over the part not done.
  // user_data carries it with the low bit set (a BlockRequest* is at least 8-aligned).
  struct Rest {
    BlockRequest* req;
    uint64_t done;  // bytes transferred so far
    std::vector<iovec> iov;
  };

  // After `done` bytes of req: queues the rest. False when no entry could be had.
  bool resubmit_rest(BlockRequest* req, uint64_t done, Rest* rest) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
      if (!sqe) return false;
    }
    if (!rest) rest = new Rest{req, 0, {}};
    rest->done = done;
    rest->iov.clear();
    uint64_t skip = done;
    for (uint32_t i = 0; i < req->iovcnt; ++i) {
      const iovec& v = req->iov[i];
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      rest->iov.push_back({static_cast<char*>(v.iov_base) + skip, v.iov_len - skip});
      skip = 0;
    }
    const auto n = static_cast<unsigned>(std::min<size_t>(rest->iov.size(), IOV_MAX));
    const uint64_t off = req->offset + done;
    if (req->op == BlockOp::read) {
      io_uring_prep_readv(sqe, fd_, rest->iov.data(), n, off);
    } else {
      io_uring_prep_writev2(sqe, fd_, rest->iov.data(), n, off, req->fua ? RWF_DSYNC : 0);
    }
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uintptr_t>(rest) | 1u);
    ++unsubmitted_;
    return true;
  }

  int reap() {
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++n;
      const uint64_t data = io_uring_cqe_get_data64(cqe);
      if (!data) continue;
      Rest* rest = (data & 1u) ? reinterpret_cast<Rest*>(data & ~uint64_t{1}) : nullptr;
      auto* req = rest ? rest->req : reinterpret_cast<BlockRequest*>(data);
      const uint64_t before = rest ? rest->done : 0;
      const int res = cqe->res;
      int status = 0;
      if (res < 0) {
        status = res;
      } else if (req->op == BlockOp::read || req->op == BlockOp::write) {
        const uint64_t done = before + static_cast<uint64_t>(res);
        if (done < req->length) {
          // Short: the rest goes again; nothing transferred this time means it will not.
          if (res > 0 && resubmit_rest(req, done, rest)) continue;
          status = -EIO;
        }
      }
      delete rest;
      --in_flight_;
      req->done(req, status);
    }
    io_uring_cq_advance(&ring_, n);
    commit();
    return static_cast<int>(n);
  }

  io_uring ring_{};
  UniqueFd efd_;
  int fd_ = -1;
  bool flush_is_noop_ = false;
  bool inline_writes_ = false;
  const Mapping* view_ = nullptr;  // the backend's, outlives the queue
  uint64_t inline_resume_ns_ = 0;
  uint64_t inline_pauses_ = 0;
  unsigned unsubmitted_ = 0;
  uint32_t in_flight_ = 0;
};

class FileBackend final : public BlockBackend {
 public:
  FileBackend(BackendInfo info, UniqueFd fd, bool flush_is_noop, bool inline_writes, Mapping view, bool fixed_size)
      : info_(std::move(info)),
        fd_(std::move(fd)),
        flush_is_noop_(flush_is_noop),
        inline_writes_(inline_writes),
        view_(std::move(view)),
        fixed_size_(fixed_size) {}
  // The mapping for read_view() stays as it was: reads of the part added go through io_uring.
  uint64_t grow(bool* shrunk) override {
    if (shrunk) *shrunk = false;
    if (fixed_size_) return info_.capacity_bytes;
    auto size = device_size(fd_.get(), nullptr);
    if (!size) return info_.capacity_bytes;
    const uint64_t now = *size - *size % info_.block_size;
    if (now > info_.capacity_bytes) info_.capacity_bytes = now;
    else if (now < info_.capacity_bytes && shrunk) *shrunk = true;
    return info_.capacity_bytes;
  }
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override {
    auto q = std::make_unique<FileQueue>();
    int rc = q->init(fd_.get(), flush_is_noop_, inline_writes_, view_.valid() ? &view_ : nullptr);
    if (rc < 0) return Err(-rc);
    return std::unique_ptr<BackendQueue>(std::move(q));
  }

 private:
  BackendInfo info_;
  UniqueFd fd_;
  bool flush_is_noop_;
  bool inline_writes_;
  Mapping view_;  // read-only shared mapping of the device (buffered files only), for read_view()
  bool fixed_size_;  // size= given: grow() keeps it
};

}  // namespace

std::unique_ptr<BlockBackend> make_file(Spec& spec, std::string* error) {
  auto path = spec.take("path");
  if (!path || path->empty()) {
    *error = "file backend needs path=";
    return nullptr;
  }
  bool direct = false, ro = false;
  BackendInfo info;
  uint64_t size = 0;
  if (!take_bool(spec, "direct", &direct, error) || !take_bool(spec, "ro", &ro, error) ||
      !take_block_size(spec, &info.block_size, error) || !take_size(spec, "size", &size, error))
    return nullptr;

  int flags = (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? O_DIRECT : 0);
  UniqueFd fd(open(path->c_str(), flags));
  if (!fd) {
    *error = "cannot open '" + *path + "': " + errno_str(errno);
    return nullptr;
  }
  std::string why;
  auto device = device_size(fd.get(), &why);
  if (!device) {
    *error = "'" + *path + "' " + why;
    return nullptr;
  }
  uint64_t capacity = *device;
  if (size) {
    if (size > capacity) {
      *error = "size= is larger than '" + *path + "' (" + std::to_string(capacity) + " bytes)";
      return nullptr;
    }
    capacity = size;
  }
  capacity -= capacity % info.block_size;
  if (capacity == 0) {
    *error = "'" + *path + "' is smaller than one block (" + std::to_string(info.block_size) + " bytes)";
    return nullptr;
  }
  info.capacity_bytes = capacity;
  info.read_only = ro;
  // With O_DIRECT on a regular file there is still the file system's metadata to persist, so
  // flush keeps meaning something; only a read-only disk has nothing to flush.
  info.volatile_cache = !ro;
  info.discard = info.write_zeroes = !ro;
  // Named after the file it is (the same name on every start, whatever path led to it); a
  // block device after the disk it is (its WWID, serial or UUID: /dev/sdb can be another disk
  // after a reboot), else after its path.
  struct stat st{};
  const bool stat_ok = ::fstat(fd.get(), &st) == 0;
  // What the storage writes in: a block device's physical sector (BLKPBSZGET: a 512e disk is
  // served as one). A regular file's is left to physical_block_size=: its page cache and file
  // system would say 4 KiB, but a 512-byte-block image is what its users asked for, and
  // iscsi-test-cu 1.19's GetLBAStatus.UnmapSingle expects, with more logical blocks to a
  // physical one, an answer SBC-4 does not allow (docs/conformance.md).
  uint64_t physical = info.block_size;
  if (stat_ok && S_ISBLK(st.st_mode)) {
    unsigned int pbs = 0;
    if (::ioctl(fd.get(), BLKPBSZGET, &pbs) == 0) physical = pbs;
  }
  if (!take_physical_block_size(spec, &info, physical, error)) return nullptr;
  {
    std::unique_ptr<char, decltype(&::free)> canonical(::realpath(path->c_str(), nullptr), &::free);
    std::string named = canonical ? canonical.get() : *path;
    if (stat_ok && S_ISBLK(st.st_mode))
      if (auto id = block_identity(major(st.st_rdev), minor(st.st_rdev))) named = "block device " + *id;
    if (!take_serial(spec, stable_serial(named), &info.serial, error)) return nullptr;
  }
  info.description = "file " + *path + (direct ? " (O_DIRECT)" : "") + (ro ? " (read-only)" : "");
  if (stat_ok)
    info.storage = S_ISBLK(st.st_mode) ? fmt::format("block {}:{}", major(st.st_rdev), minor(st.st_rdev))
                                       : fmt::format("file {}:{}", st.st_dev, st.st_ino);
  // A buffered file's page cache, mapped read-only, is where read_view() points: a target sends
  // Data-In from it with no read request and no copy of its own. Not with O_DIRECT (the page
  // cache is bypassed there, and mixing the two is not coherent). Without a mapping (mmap
  // refused: address space, a device that cannot be mapped) reads simply go through io_uring.
  Mapping view;
  if (!direct) {
    auto m = Mapping::map_shared(fd.get(), 0, capacity, PROT_READ);
    if (m) view = std::move(*m);
    else VCP_LOG_DEBUG("file backend: cannot map '{}' ({}): no in-place reads", *path, errno_str(m.error()));
  }
  return std::make_unique<FileBackend>(std::move(info), std::move(fd), ro, !direct && !ro, std::move(view), size != 0);
}

}  // namespace vcp::backends
