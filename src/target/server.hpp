// The `vcp target` process: a listening portal, one I/O thread per CPU given, each with its own
// io_uring, its own queue on every backend and its own scsi::Lun per LUN. The accepting thread
// hands each new connection to the I/O thread with the fewest connections (among equals, in
// turn); from then on the connection lives on that thread alone.
//
// Per thread, one loop: submit-and-wait on the ring; receive and send completions feed the
// TargetConnection state machines; then every Lun is polled (backend completions become Data-In
// and responses), sends are queued for connections with output, and the Luns commit their
// batches. A 250 ms timeout drives login timeouts and NOP-In keepalives.
//
// Each thread's scsi::Lun of a LUN keeps its own backend queue and task list (no lock on the
// data path); the state SPC-4 keeps per logical unit (persistent reservations, RESERVE(6/10),
// unit attentions, mode pages) is one scsi::SharedLuState per LUN that all of them share, and a
// reset on one thread reaches the others' tasks as a message that wakes their loops.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/block_backend.hpp"
#include "base/unique_fd.hpp"
#include "target/scsi/shared_state.hpp"
#include "target/session_registry.hpp"
#include "target/settings.hpp"

namespace vcp::target {

// A LUN's backend and what the LUN is called in messages ("LUN 3 of IQN 'ram:size=64M'").
using NamedBackend = std::pair<std::string, const BlockBackend*>;
// True when b (called `name`) would go by another disk's identity: its serial is one of
// `others`' (VPD 0x80; the T10 and NAA designators of 0x83 are made from it) and the two are not
// one file or device (BackendInfo::storage). Initiators that group paths by identity
// (dm-multipath, udev's /dev/disk/by-id) would take two such disks for one; *error says which
// and what to do.
bool identity_clash(const std::string& name, const BlockBackend& b, const std::vector<NamedBackend>& others,
                    std::string* error);

class IoThread;
struct ChangeLatch;
struct Retirement;

class TargetServer {
 public:
  // Opens the backends and the listening socket; nothing runs yet.
  static std::unique_ptr<TargetServer> create(TargetSettings settings, std::string* error);
  ~TargetServer();

  // "HOST:PORT" actually bound (the port is filled in when the settings asked for 0): the
  // first portal's, and every portal's.
  std::string address() const;
  std::vector<std::string> addresses() const;
  // Starts the I/O threads and accepts connections until stop(); returns 0 or an errno.
  int run();
  // Safe from any thread.
  void stop();

  const SessionRegistry& sessions() const { return sessions_; }

  // Replaces the access list and credentials for logins from now on (sessions logged in go
  // on). Safe from any thread; `a` comes from settings that passed validate().
  void set_access(AccessSettings a);
  // The access settings new logins get now.
  std::shared_ptr<const AccessSettings> access() const { return access_.load(); }

  // Adds LUNs to a running target (index in TargetSettings::all_targets()): their backends are
  // opened, every I/O thread takes them, and the target's other LUNs report REPORTED LUNS
  // DATA HAS CHANGED to the sessions logged in. Safe from any thread while run() runs; returns
  // once every thread has them. Nothing is added if anything fails (*error says what).
  bool add_luns(size_t target, const std::vector<LunSpec>& luns, std::string* error);
  // Removes LUNs (by number) from a running target: every I/O thread takes them out of the
  // target at once (commands to them fail with LOGICAL UNIT NOT SUPPORTED, REPORT LUNS leaves
  // them out, the target's other LUNs report REPORTED LUNS DATA HAS CHANGED), while commands
  // already in them run to their end; each one's backend is closed after the last (logged).
  // Returns once every thread has taken them out; nothing is removed if a number is unknown.
  // A LUN of the same number may be added right after (another backend in its place).
  bool remove_luns(size_t target, const std::vector<uint32_t>& numbers, std::string* error);
  // Gives LUNs (by number; each must exist) other backends: the new ones are opened first, so
  // that nothing changes if one cannot be; then each I/O thread, in one turn, takes the old
  // LUN out (as remove_luns() does: its commands run to their end, its backend closes after
  // them) and the new one in (a new logical unit: every session's first command to it gets the
  // power-on unit attention). Returns once every thread has done so.
  bool replace_luns(size_t target, const std::vector<LunSpec>& luns, std::string* error);
  // Removes a target's LUNs (as remove_luns()) and the target from the status report; a target
  // of its name may be added again (with another index). Its logins and sessions go with its
  // access settings (TargetAccess::removed, set_access()), which the caller sets first.
  bool remove_target(size_t target, std::string* error);
  // Backends grown since they were opened (a LUN's file or block device made larger): each
  // such LUN serves its new capacity from now on, and every session gets CAPACITY DATA HAS
  // CHANGED (2Ah/09h) from it. A backend that shrank is not shrunk. Returns a line per LUN
  // that grew or shrank, for the log.
  std::vector<std::string> grow_luns();
  // Gives a target another alias (TargetAlias in its logins from now on, the status report).
  bool set_alias(size_t target, const std::string& alias, std::string* error);
  // Adds a target with its LUNs to the running server, after the others (its index is the
  // number of targets so far), as add_luns() adds LUNs. Logins find it once the access
  // settings have an entry for it (set_access() with one more TargetAccess); until then it is
  // as if absent. `spec` passed validate(); its name must be new.
  bool add_target(const TargetSpec& spec, std::string* error);

  // A status report, a line each: connections, each target's LUNs and access, and per I/O
  // thread its buffer room and every connection (TargetConnection::describe). Safe from any
  // thread; waits at most 5 s for each I/O thread's part.
  std::vector<std::string> status();

  // The [limits] of `from` that a running target can take (take_live_limits()) become those
  // of connections accepted from now on; connections there are keep theirs. Returns their
  // names where they changed. Safe from any thread.
  std::vector<std::string> set_limits(const TargetSettings& from);
  // Listens on `wanted` (a reload's portals) instead: a portal in both keeps its socket, a new
  // one is bound first (one that cannot be leaves everything as it was: false, *error says
  // which), one no longer wanted stops accepting (sessions that came through it go on).
  // SendTargets names the new list from then on. *added and *removed get their addresses.
  // Safe from any thread.
  bool set_portals(const std::vector<Portal>& wanted, std::vector<std::string>* added,
                   std::vector<std::string>* removed, std::string* error);

 private:
  struct Listener {
    Portal configured;  // as given (port 0: the kernel picks one)
    Portal bound;       // with the port it got
    UniqueFd fd;
  };
  static std::shared_ptr<Listener> listen_on(const Portal& p, std::string* error);
  // Sets a's portal_addresses and wildcard_portal from the listeners; portals_mu_ held.
  void fill_portals(AccessSettings& a) const;
  TargetServer() = default;
  enum class Post { add, new_target, replace };
  bool post_luns(size_t target, const TargetSpec& spec, const std::vector<LunSpec>& luns, Post how, std::string* error);
  std::shared_ptr<Retirement> retire(size_t target, uint32_t number);
  bool remove_luns_locked(size_t target, const std::vector<uint32_t>& numbers, std::string* error);
  void on_every_thread(const std::function<void(size_t, std::shared_ptr<ChangeLatch>)>& post);

  TargetSettings settings_;
  AccessHolder access_;
  LimitsHolder limits_;  // for connections to come: settings_ with a reload's live [limits]
  // One per LUN served: those of settings_.all_targets() in order (as the I/O threads take them
  // at start), then those added; a removed LUN's goes to its Retirement.
  std::vector<std::unique_ptr<BlockBackend>> backends_;
  std::vector<std::shared_ptr<scsi::SharedLuState>> lu_states_;  // likewise
  SessionRegistry sessions_;
  // The portals, in order; run() takes the list again when the generation moves (the listeners
  // it drops are closed there, once no longer polled).
  mutable std::mutex portals_mu_;
  std::vector<std::shared_ptr<Listener>> listeners_;
  uint64_t listeners_gen_ = 0;
  UniqueFd portals_fd_;  // eventfd: the listeners changed
  UniqueFd stop_fd_;  // eventfd
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> connections_{0};  // open, on all threads (max_connections)
  std::mutex change_mu_;  // LUN changes one at a time, and threads_ while run() builds or clears it
  // The targets served (settings_.all_targets(), then those add_target() added), each one's
  // LUNs (as add_luns() left them) and their backends (owned by backends_).
  std::vector<TargetSpec> targets_;
  std::vector<bool> removed_;  // per target: remove_target() took it away
  std::vector<std::vector<std::pair<LunSpec, BlockBackend*>>> inventory_;
  std::vector<std::unique_ptr<IoThread>> threads_;
};

}  // namespace vcp::target
