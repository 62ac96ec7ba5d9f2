// ram: a disk in this process's memory. Reserved lazily (MAP_NORESERVE), so a large disk costs
// only what is written; discard and write-zeroes give pages back with MADV_DONTNEED.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "backends/factories.hpp"
#include "base/mapping.hpp"

namespace vcp::backends {
namespace {

class RamBackend;

class RamQueue final : public BackendQueue {
 public:
  RamQueue(uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  void submit(BlockRequest* req) override;
  const uint8_t* read_view(uint64_t offset, uint64_t length) const override {
    return offset <= size_ && length <= size_ - offset ? base_ + offset : nullptr;
  }

 private:
  uint8_t* base_;
  uint64_t size_;
};

class RamBackend final : public BlockBackend {
 public:
  RamBackend(BackendInfo info, Mapping mem) : info_(std::move(info)), mem_(std::move(mem)) {}
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override {
    return std::unique_ptr<BackendQueue>(std::make_unique<RamQueue>(mem_.data(), info_.capacity_bytes));
  }

 private:
  BackendInfo info_;
  Mapping mem_;
};

// Zeroes [p, p+len): whole pages are dropped (they read back as zeros and free memory), the
// ragged ends are cleared by hand.
void zero_range(uint8_t* p, uint64_t len) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t start = reinterpret_cast<uintptr_t>(p);
  uintptr_t end = start + len;
  uintptr_t first = (start + page - 1) & ~(page - 1);
  uintptr_t last = end & ~(page - 1);
  if (first >= last) {
    std::memset(p, 0, len);
    return;
  }
  std::memset(p, 0, first - start);
  if (madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) != 0)
    std::memset(reinterpret_cast<void*>(first), 0, last - first);
  std::memset(reinterpret_cast<void*>(last), 0, end - last);
}

void RamQueue::submit(BlockRequest* req) {
  uint8_t* p = base_ + req->offset;
  switch (req->op) {
    case BlockOp::read:
      for (uint32_t i = 0; i < req->iovcnt; ++i) {
        std::memcpy(req->iov[i].iov_base, p, req->iov[i].iov_len);
        p += req->iov[i].iov_len;
      }
      break;
    case BlockOp::write:
      for (uint32_t i = 0; i < req->iovcnt; ++i) {
        std::memcpy(p, req->iov[i].iov_base, req->iov[i].iov_len);
        p += req->iov[i].iov_len;
      }
      break;
    case BlockOp::discard:
    case BlockOp::write_zeroes:
      zero_range(p, req->length);
      break;
    case BlockOp::flush:
      break;
    case BlockOp::get_id:
      req->done(req, -EOPNOTSUPP);
      return;
  }
  req->done(req, 0);
}

}  // namespace

std::unique_ptr<BlockBackend> make_ram(Spec& spec, std::string* error) {
  BackendInfo info;
  info.capacity_bytes = 256ull << 20;
  // Memory writes in any size: physical blocks are logical ones unless physical_block_size= says
  // otherwise (a ram disk standing in for a 512e disk).
  if (!take_size(spec, "size", &info.capacity_bytes, error) || !take_block_size(spec, &info.block_size, error) ||
      !take_physical_block_size(spec, &info, 0, error) ||
      !take_serial(spec, random_serial(), &info.serial, error))
    return nullptr;
  info.capacity_bytes -= info.capacity_bytes % info.block_size;
  if (info.capacity_bytes == 0) {
    *error = "size is smaller than one block";
    return nullptr;
  }
  void* p = mmap(nullptr, info.capacity_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    *error = "cannot reserve " + std::to_string(info.capacity_bytes) + " bytes: " + errno_str(errno);
    return nullptr;
  }
  info.discard = info.write_zeroes = true;
  info.description = "ram (" + std::to_string(info.capacity_bytes) + " bytes)";
  info.storage = own_storage("ram");
  return std::make_unique<RamBackend>(std::move(info), Mapping(p, info.capacity_bytes));
}

}  // namespace vcp::backends
