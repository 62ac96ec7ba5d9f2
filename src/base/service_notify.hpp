// Telling a service manager how the process is doing: systemd's notification protocol
// (sd_notify(3); a unit of Type=notify). The manager puts the path of a datagram socket in
// $NOTIFY_SOCKET ("@name": the abstract namespace); the process sends it newline-separated
// VAR=value lines: READY=1 once it serves (a unit ordered after it starts then, say a VM whose
// disk is on `vcp serve`'s socket), RELOADING=1 while a SIGHUP is acted on, STOPPING=1 on the
// way out, STATUS=... for `systemctl status`. Without $NOTIFY_SOCKET nothing is sent.
//
// The protocol is a single datagram; systemd documents it for reimplementation, so it is done
// here rather than by linking libsystemd for one call (docs/dependencies.md).
#pragma once

#include <string>
#include <string_view>

namespace vcp {

// Sends `state` to $NOTIFY_SOCKET. 0 when sent or when there is no $NOTIFY_SOCKET; -errno
// when the socket named cannot be reached (the caller logs it: a manager waiting for READY=1
// would time the service out).
int notify_service_manager(std::string_view state);

// notify_service_manager(), and a warning in the log ("WHO: cannot notify the service manager
// at PATH: ...") when it fails, once per process: the service runs on, but its manager may
// time it out.
void notify_service_manager_or_warn(std::string_view state, std::string_view who);

// "RELOADING=1\nMONOTONIC_USEC=<now>": what a reload starts with (systemd 253's
// Type=notify-reload matches the time with the SIGHUP it sent).
std::string reloading_state();

}  // namespace vcp
