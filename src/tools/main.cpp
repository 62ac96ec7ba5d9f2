// vcp: one binary, one subcommand per job (serve, and later bench, target, ctl, export ...).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>

#include "base/log.hpp"
#include "tools/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"vcp: I/O subsystems as Virtual Channel Processors"};
  app.require_subcommand(1);
  std::string level;
  app.add_option("--log-level", level, "trace, debug, info, warn, error or off (also VCP_LOG=)");

  std::map<CLI::App*, vcp::tools::Runner> runners;
  auto add = [&](vcp::tools::Runner (*fn)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    auto r = fn(app);
    runners[app.get_subcommands({})[before]] = std::move(r);
  };
  add(vcp::tools::add_serve);
  add(vcp::tools::add_bench);
  add(vcp::tools::add_discover);
  add(vcp::tools::add_target);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!level.empty()) {
    vcp::log::Level l;
    if (!vcp::log::parse_level(level, &l)) {
      std::fprintf(stderr, "vcp: unknown log level '%s'\n", level.c_str());
      return 2;
    }
    vcp::log::set_level(l);
  }
  for (auto* sub : app.get_subcommands()) return runners.at(sub)();
  return 2;
}
