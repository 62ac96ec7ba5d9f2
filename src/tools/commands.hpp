// The `vcp` binary's subcommands: each registers itself on the CLI11 app and runs when chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace vcp::tools {

// Each returns the function that runs the subcommand once parsing has succeeded.
using Runner = std::function<int()>;
Runner add_serve(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_discover(CLI::App& app);
Runner add_target(CLI::App& app);

}  // namespace vcp::tools
