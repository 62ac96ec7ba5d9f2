// null: every request succeeds at once and no data moves. It measures the channel alone.
#include "backends/factories.hpp"

namespace vcp::backends {
namespace {

class NullQueue final : public BackendQueue {
 public:
  void submit(BlockRequest* req) override { req->done(req, 0); }
};

class NullBackend final : public BlockBackend {
 public:
  explicit NullBackend(BackendInfo info) : info_(std::move(info)) {}
  const BackendInfo& info() const override { return info_; }
  Result<std::unique_ptr<BackendQueue>> open_queue(unsigned) override {
    return std::unique_ptr<BackendQueue>(std::make_unique<NullQueue>());
  }

 private:
  BackendInfo info_;
};

}  // namespace

std::unique_ptr<BlockBackend> make_null(Spec& spec, std::string* error) {
  BackendInfo info;
  info.capacity_bytes = 1ull << 30;
  if (!take_size(spec, "size", &info.capacity_bytes, error) || !take_block_size(spec, &info.block_size, error) ||
      !take_physical_block_size(spec, &info, 0, error) || !take_serial(spec, random_serial(), &info.serial, error))
    return nullptr;
  info.capacity_bytes -= info.capacity_bytes % info.block_size;
  if (info.capacity_bytes == 0) {
    *error = "size is smaller than one block";
    return nullptr;
  }
  info.discard = info.write_zeroes = true;
  info.description = "null (" + std::to_string(info.capacity_bytes) + " bytes)";
  info.storage = own_storage("null");
  return std::make_unique<NullBackend>(std::move(info));
}

}  // namespace vcp::backends
