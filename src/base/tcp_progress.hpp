#pragma once
// How far a TCP peer has taken our output: the bytes it acknowledged (TCP_INFO
// tcpi_bytes_acked, Linux 4.1 and later). A peer that acknowledges is alive, even when it
// sends nothing (it waits for what we send): keep-alive uses it on slow or saturated links.
#include <cstdint>
#include <optional>

namespace vcp {

// nullopt when fd is not a TCP socket, or the kernel does not report it.
std::optional<uint64_t> tcp_bytes_acked(int fd);

}  // namespace vcp
