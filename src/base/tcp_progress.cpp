#include "base/tcp_progress.hpp"

// <linux/tcp.h>, not glibc's <netinet/tcp.h> (whose struct tcp_info stops short of
// tcpi_bytes_acked); the two cannot be included together, hence a file of its own.
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstddef>

namespace vcp {

std::optional<TcpProgress> tcp_progress(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return std::nullopt;
  if (len < offsetof(tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received) return std::nullopt;
  int queued = 0;
  if (::ioctl(fd, SIOCOUTQ, &queued) != 0 || queued < 0) return std::nullopt;
  return TcpProgress{ti.tcpi_bytes_acked, static_cast<uint32_t>(queued), ti.tcpi_bytes_received};
}

}  // namespace vcp
