// The in-process engine of `vcp bench --backend SPEC`: the load generator drives a BlockBackend
// directly on the job threads, with no channel in between, so that the cost of the channel can
// be measured against identical backend code (`vcp bench --socket` on `vcp serve --backend SPEC`).
#pragma once

#include <memory>
#include <string>

#include "tools/bench_load.hpp"
#include "vcp/client.hpp"

namespace vcp::tools::bench {

// Creates the backend from `spec` (as `vcp serve --backend` does). `poll` says how a job waits
// for completions: always spins on BackendQueue::poll(), never sleeps on its wait_fd() as soon
// as nothing is there, adaptive spins `spin_us` first. nullptr and *error on failure.
std::unique_ptr<Engine> make_backend_engine(const std::string& spec, client::PollMode poll, uint32_t spin_us,
                                            unsigned max_queues, std::string* error);

}  // namespace vcp::tools::bench
