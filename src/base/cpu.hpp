// CPU lists and thread placement: a VCP's scheduling domain is the CPU set it is pinned to.
#pragma once

#include <string>
#include <vector>

#include "base/result.hpp"

namespace vcp {

// Parses "0", "0-3", "0,2,5-6" into a sorted list of distinct CPU numbers.
Result<std::vector<int>> parse_cpu_list(const std::string& s);
// Pins the calling thread to one CPU; -errno on failure.
int pin_current_thread(int cpu);
// Names the calling thread (shown by top -H and in the log); truncated to 15 characters.
void name_current_thread(const std::string& name);
int online_cpus();
// Spin-loop hint.
inline void cpu_relax() { __builtin_ia32_pause(); }

}  // namespace vcp
