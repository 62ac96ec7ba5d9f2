#include "base/tcp_progress.hpp"

// <linux/tcp.h>, not glibc's <netinet/tcp.h> (whose struct tcp_info stops short of
// tcpi_bytes_acked); the two cannot be included together, hence a file of its own.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>

namespace vcp {

std::optional<uint64_t> tcp_bytes_acked(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return std::nullopt;
  if (len < offsetof(tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked) return std::nullopt;
  return ti.tcpi_bytes_acked;
}

}  // namespace vcp
