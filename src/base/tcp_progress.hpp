#pragma once
// How far a TCP peer has taken our output: the bytes it acknowledged (TCP_INFO
// tcpi_bytes_acked, Linux 4.1 and later) and what still waits in our send queue (SIOCOUTQ);
// and how much it sent us (tcpi_bytes_received), whether or not a read took it yet.
// Keep-alive uses it on slow or saturated links: a peer that acknowledges output we had
// queued is alive, even when it sends nothing (it waits for what we send).
#include <cstdint>
#include <optional>

namespace vcp {

struct TcpProgress {
  uint64_t acked = 0;   // bytes the peer has acknowledged on this connection so far
  uint32_t queued = 0;  // bytes in our send queue not yet acknowledged
  uint64_t received = 0;  // bytes received on this connection so far
};

// nullopt when fd is not a TCP socket, or the kernel does not report it.
std::optional<TcpProgress> tcp_progress(int fd);

// Whether the peer took output between two readings: more acknowledged since `mark`, and
// output was waiting then. An idle connection's own small sends (a ping, a task management
// request) are acknowledged by the kernel of a host whose iSCSI process is stopped, and do not
// count: only output that was backed up, as on a slow link, does.
inline bool took_queued_output(const TcpProgress& mark, const TcpProgress& now) {
  return mark.queued > 0 && now.acked > mark.acked;
}

}  // namespace vcp
