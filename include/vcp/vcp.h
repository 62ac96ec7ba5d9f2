/* libvcp's C API: a thin layer over include/vcp/client.hpp for C programs and other languages.
 *
 * Same rules as the C++ API: every function returns 0 (or a count) on success and a negative
 * errno on failure; a vcp_queue is used by one thread at a time; buffers from vcp_alloc()
 * travel with zero copies, others are copied (vcp_is_zero_copy() says which). */
#ifndef VCP_VCP_H
#define VCP_VCP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vcp_client vcp_client;
typedef struct vcp_queue vcp_queue;

enum vcp_poll_mode { VCP_POLL_ALWAYS = 0, VCP_POLL_ADAPTIVE = 1, VCP_POLL_NEVER = 2 };

struct vcp_options {
  uint16_t num_queues;    /* 0: all the device has (at most 64) */
  uint16_t queue_size;    /* power of two */
  size_t buffer_bytes;    /* arena space for vcp_alloc() */
  uint32_t bounce_bytes;  /* per request in flight, for copied buffers */
  int poll_mode;          /* enum vcp_poll_mode */
  uint32_t spin_us;
  int control_timeout_ms;
  int sync_timeout_ms;
};

struct vcp_info {
  uint64_t capacity_bytes;
  uint32_t block_size;
  uint32_t seg_max;
  uint32_t size_max;
  uint32_t max_transfer;
  uint16_t num_queues;
  int read_only, flush, discard, write_zeroes;
};

struct vcp_completion {
  void* user;
  int result;
};

typedef void (*vcp_callback)(void* user, int result);

/* Fills *opts with the defaults. */
void vcp_options_init(struct vcp_options* opts);
/* opts may be NULL (defaults). */
int vcp_connect(const char* socket_path, const struct vcp_options* opts, vcp_client** out);
void vcp_close(vcp_client* c);
/* capacity_bytes is the capacity now (it grows after vcp_update_config). */
int vcp_get_info(const vcp_client* c, struct vcp_info* out);
/* The device's physical block in bytes (a power of two, at least block_size): writes aligned to
   it and sized in multiples of it avoid read-modify-write below (a 512e disk says 4096). Not in
   struct vcp_info, whose size callers compiled against this header allocate. */
uint32_t vcp_physical_block_size(const vcp_client* c);
/* Readable when the device says its configuration changed (its capacity grew); -1 when it
   cannot say so. Then: vcp_update_config, 1 when the capacity changed, 0 when not, -errno. */
int vcp_config_fd(const vcp_client* c);
int vcp_update_config(vcp_client* c);
int vcp_error(const vcp_client* c);
unsigned vcp_num_queues(const vcp_client* c);
vcp_queue* vcp_get_queue(vcp_client* c, unsigned index);

void* vcp_alloc(vcp_client* c, size_t len);
void vcp_free(vcp_client* c, void* p);
int vcp_is_zero_copy(const vcp_client* c, const void* p, size_t len);

/* Asynchronous: cb may be NULL (the completion then comes from vcp_poll/vcp_wait). */
int vcp_read(vcp_queue* q, uint64_t offset, void* buf, size_t len, void* user, vcp_callback cb);
int vcp_write(vcp_queue* q, uint64_t offset, const void* buf, size_t len, void* user, vcp_callback cb);
int vcp_flush(vcp_queue* q, void* user, vcp_callback cb);
int vcp_discard(vcp_queue* q, uint64_t offset, uint64_t len, void* user, vcp_callback cb);
int vcp_write_zeroes(vcp_queue* q, uint64_t offset, uint64_t len, int may_unmap, void* user, vcp_callback cb);
int vcp_get_id(vcp_queue* q, char buf[20], void* user, vcp_callback cb);
int vcp_commit(vcp_queue* q);
int vcp_poll(vcp_queue* q, struct vcp_completion* out, unsigned max);
int vcp_wait(vcp_queue* q, struct vcp_completion* out, unsigned max, unsigned min, int timeout_ms);

/* Synchronous. */
int vcp_read_sync(vcp_queue* q, uint64_t offset, void* buf, size_t len);
int vcp_write_sync(vcp_queue* q, uint64_t offset, const void* buf, size_t len);
int vcp_flush_sync(vcp_queue* q);

#ifdef __cplusplus
}
#endif

#endif /* VCP_VCP_H */
