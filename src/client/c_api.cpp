// The C API: handles are the C++ objects themselves, cast.
#include "vcp/vcp.h"

#include <cstddef>

#include "vcp/client.hpp"

using vcp::client::Client;
using vcp::client::Queue;

struct vcp_client {
  std::unique_ptr<Client> c;
};

namespace {
Queue* Q(vcp_queue* q) { return reinterpret_cast<Queue*>(q); }
}  // namespace

extern "C" {

void vcp_options_init(vcp_options* o) {
  const vcp::client::ClientOptions d;
  o->num_queues = d.num_queues;
  o->queue_size = d.queue_size;
  o->buffer_bytes = d.buffer_bytes;
  o->bounce_bytes = d.bounce_bytes;
  o->poll_mode = static_cast<int>(d.poll);
  o->spin_us = d.spin_us;
  o->control_timeout_ms = d.control_timeout_ms;
  o->sync_timeout_ms = d.sync_timeout_ms;
}

int vcp_connect(const char* socket_path, const vcp_options* opts, vcp_client** out) {
  if (!socket_path || !out) return -EINVAL;
  vcp_options o;
  vcp_options_init(&o);
  if (opts) o = *opts;
  if (o.poll_mode < VCP_POLL_ALWAYS || o.poll_mode > VCP_POLL_NEVER) return -EINVAL;
  vcp::client::ClientOptions co;
  co.num_queues = o.num_queues;
  co.queue_size = o.queue_size;
  co.buffer_bytes = o.buffer_bytes;
  co.bounce_bytes = o.bounce_bytes;
  co.poll = static_cast<vcp::client::PollMode>(o.poll_mode);
  co.spin_us = o.spin_us;
  co.control_timeout_ms = o.control_timeout_ms;
  co.sync_timeout_ms = o.sync_timeout_ms;
  auto* h = new vcp_client;
  if (int rc = Client::connect(socket_path, co, &h->c); rc < 0) {
    delete h;
    return rc;
  }
  *out = h;
  return 0;
}

void vcp_close(vcp_client* c) { delete c; }

int vcp_get_info(const vcp_client* c, vcp_info* out) {
  const auto& i = c->c->info();
  *out = vcp_info{c->c->capacity_bytes(), i.block_size, i.seg_max,  i.size_max,    i.max_transfer,
                  i.num_queues,     i.read_only,  i.flush,    i.discard,     i.write_zeroes};
  return 0;
}

uint32_t vcp_physical_block_size(const vcp_client* c) { return c->c->info().physical_block_size; }

int vcp_config_fd(const vcp_client* c) { return c->c->config_fd(); }
int vcp_update_config(vcp_client* c) { return c->c->update_config(); }
int vcp_error(const vcp_client* c) { return c->c->error(); }
unsigned vcp_num_queues(const vcp_client* c) { return c->c->num_queues(); }
vcp_queue* vcp_get_queue(vcp_client* c, unsigned index) {
  if (index >= c->c->num_queues()) return nullptr;
  return reinterpret_cast<vcp_queue*>(&c->c->queue(index));
}

void* vcp_alloc(vcp_client* c, size_t len) { return c->c->alloc(len); }
void vcp_free(vcp_client* c, void* p) { c->c->free(p); }
int vcp_is_zero_copy(const vcp_client* c, const void* p, size_t len) { return c->c->is_zero_copy(p, len); }

int vcp_read(vcp_queue* q, uint64_t offset, void* buf, size_t len, void* user, vcp_callback cb) {
  return Q(q)->read(offset, buf, len, user, cb);
}
int vcp_write(vcp_queue* q, uint64_t offset, const void* buf, size_t len, void* user, vcp_callback cb) {
  return Q(q)->write(offset, buf, len, user, cb);
}
int vcp_flush(vcp_queue* q, void* user, vcp_callback cb) { return Q(q)->flush(user, cb); }
int vcp_discard(vcp_queue* q, uint64_t offset, uint64_t len, void* user, vcp_callback cb) {
  return Q(q)->discard(offset, len, user, cb);
}
int vcp_write_zeroes(vcp_queue* q, uint64_t offset, uint64_t len, int may_unmap, void* user, vcp_callback cb) {
  return Q(q)->write_zeroes(offset, len, may_unmap != 0, user, cb);
}
int vcp_get_id(vcp_queue* q, char buf[20], void* user, vcp_callback cb) { return Q(q)->get_id(buf, user, cb); }
int vcp_commit(vcp_queue* q) { return Q(q)->commit(); }

static_assert(sizeof(vcp_completion) == sizeof(vcp::client::Completion));
static_assert(offsetof(vcp_completion, user) == offsetof(vcp::client::Completion, user));
static_assert(offsetof(vcp_completion, result) == offsetof(vcp::client::Completion, result));

int vcp_poll(vcp_queue* q, vcp_completion* out, unsigned max) {
  return Q(q)->poll(reinterpret_cast<vcp::client::Completion*>(out), max);
}
int vcp_wait(vcp_queue* q, vcp_completion* out, unsigned max, unsigned min, int timeout_ms) {
  return Q(q)->wait(reinterpret_cast<vcp::client::Completion*>(out), max, min, timeout_ms);
}

int vcp_read_sync(vcp_queue* q, uint64_t offset, void* buf, size_t len) { return Q(q)->read_sync(offset, buf, len); }
int vcp_write_sync(vcp_queue* q, uint64_t offset, const void* buf, size_t len) {
  return Q(q)->write_sync(offset, buf, len);
}
int vcp_flush_sync(vcp_queue* q) { return Q(q)->flush_sync(); }

}  // extern "C"
