#include "base/cpu.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

namespace vcp {

Result<std::vector<int>> parse_cpu_list(const std::string& s) {
  std::vector<int> cpus;
  if (s.empty()) return Err(EINVAL);
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    std::string_view part(s.data() + pos, comma - pos);
    if (part.empty()) return Err(EINVAL);
    size_t dash = part.find('-');
    int lo = 0, hi = 0;
    auto parse = [](std::string_view v, int* out) {
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
      return ec == std::errc() && p == v.data() + v.size() && *out >= 0 && *out < CPU_SETSIZE;
    };
    if (dash == std::string_view::npos) {
      if (!parse(part, &lo)) return Err(EINVAL);
      hi = lo;
    } else {
      if (!parse(part.substr(0, dash), &lo) || !parse(part.substr(dash + 1), &hi) || hi < lo) return Err(EINVAL);
    }
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
    pos = comma + 1;
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

int pin_current_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

void name_current_thread(const std::string& name) { pthread_setname_np(pthread_self(), name.substr(0, 15).c_str()); }

int online_cpus() { return static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)); }

}  // namespace vcp
