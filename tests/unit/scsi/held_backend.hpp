// A memory-backed backend whose completions the test controls: while a queue is held, requests
// wait in it; release() lets its next poll() complete them (in order). One queue per thread,
// as the BlockBackend contract says; queues of one backend share the memory.
#pragma once

#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "backends/block_backend.hpp"

namespace vcp::scsi::test {

class HeldBackend final : public BlockBackend {
 public:
  class Queue final : public BackendQueue {
   public:
    explicit Queue(HeldBackend& b) : b_(b) {}
    void submit(BlockRequest* req) override {
      ++submitted;
      pending_.push_back(req);
      if (!held) poll();
    }
    int poll() override {
      int n = 0;
      while (!held && !pending_.empty()) {
        BlockRequest* r = pending_.front();
        pending_.pop_front();
        r->done(r, b_.run(r));
        ++n;
      }
      return n;
    }
    uint32_t in_flight() const override { return static_cast<uint32_t>(pending_.size()); }
    void release() { held = false; }

    bool held = false;
    int submitted = 0;

   private:
    HeldBackend& b_;
    std::deque<BlockRequest*> pending_;
  };

  explicit HeldBackend(uint64_t bytes) : mem_(bytes) {
    info_.capacity_bytes = bytes;
    info_.block_size = 512;
    info_.volatile_cache = true;
    info_.write_zeroes = true;
    info_.serial = "held";
  }
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override {
    return std::unique_ptr<BackendQueue>(std::make_unique<Queue>(*this));
  }

 private:
  int run(BlockRequest* r) {
    uint64_t off = r->offset;
    if (r->op == BlockOp::read || r->op == BlockOp::write) {
      for (uint32_t i = 0; i < r->iovcnt; ++i) {
        if (r->op == BlockOp::read) std::memcpy(r->iov[i].iov_base, &mem_[off], r->iov[i].iov_len);
        else std::memcpy(&mem_[off], r->iov[i].iov_base, r->iov[i].iov_len);
        off += r->iov[i].iov_len;
      }
    } else if (r->op == BlockOp::write_zeroes || r->op == BlockOp::discard) {
      std::memset(&mem_[off], 0, r->length);
    }
    return 0;
  }
  BackendInfo info_;
  std::vector<uint8_t> mem_;
};

}  // namespace vcp::scsi::test
