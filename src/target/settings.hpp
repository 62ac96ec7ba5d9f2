// What one `vcp target` serves: its targets (name, LUNs, access list, credentials), portal,
// CPUs and protocol limits. Built from the command line or a TOML file (settings.cpp);
// read-only once the server starts, but for the access lists and credentials, which a reload
// replaces (AccessSettings below).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "iscsi/chap.hpp"
#include "iscsi/negotiation.hpp"
#include "target/acl.hpp"

namespace vcp::target {

struct LunSpec {
  uint32_t number = 0;
  std::string backend;  // a backend spec: "ram:size=64M", "file:path=...", "null:size=..."

  bool operator==(const LunSpec&) const = default;
};

// One target (IQN) of the process: its LUNs, who may log in to it and with which credentials.
struct TargetSpec {
  std::string iqn;
  std::string alias;
  std::vector<LunSpec> luns;
  InitiatorAcl acl;
  std::optional<iscsi::ChapCredentials> chap;         // required of initiators
  std::optional<iscsi::ChapCredentials> mutual_chap;  // ours, for mutual CHAP

  bool operator==(const TargetSpec&) const = default;
};

// A listening address (the host as parse_portal leaves it: an IPv6 address without brackets).
struct Portal {
  std::string host;
  uint16_t port = 0;
  bool operator==(const Portal&) const = default;
};

// The first target is the top-level iqn, alias, luns, acl, chap and mutual_chap (the command
// line's --iqn, --lun, ...); more_targets are the others (TOML [[target]]). All are on every
// portal: host:port and more_portals, one portal group (a multipath initiator's paths).
struct TargetSettings {
  std::string iqn;
  std::string alias;
  std::string host = "127.0.0.1";
  uint16_t port = 3260;
  std::vector<Portal> more_portals;  // --portal given again, TOML portal = [...]
  uint16_t portal_group_tag = 1;
  std::vector<LunSpec> luns;
  // CHAP: the initiator's name and secret we require; for mutual CHAP also ours.
  std::optional<iscsi::ChapCredentials> chap;
  std::optional<iscsi::ChapCredentials> mutual_chap;
  // CHAP for discovery sessions (SendTargets): the initiator's name and secret; none: discovery
  // is open.
  std::optional<iscsi::ChapCredentials> discovery_chap;
  // Our identity for mutual CHAP in discovery sessions (a discovery session has no target of
  // its own); none: the first target's mutual_chap. discovery_identity() gives the one used.
  std::optional<iscsi::ChapCredentials> discovery_mutual_chap;
  // The CHAP algorithms initiators may use, every target and discovery (`chap_algorithms`,
  // --chap-algs); empty: all four (MD5, SHA-1, SHA-256, SHA3-256).
  std::vector<iscsi::ChapAlgorithm> chap_algorithms;
  std::vector<int> cpus;  // one I/O thread per CPU; empty: one unpinned thread
  // Where persistent reservations an initiator asks to keep through a restart (APTPL) are
  // kept, a file per LUN (scsi::PrStore); empty: APTPL is refused (PTPL_C 0). Made if missing
  // (with its parents).
  std::string state_dir;
  InitiatorAcl acl;       // who may log in (--allow-initiator, --allow-address)
  std::vector<TargetSpec> more_targets;

  // Every target, the first one first; an index into it names a target to the server.
  std::vector<TargetSpec> all_targets() const;
  // host:port, then more_portals.
  std::vector<Portal> portals() const;
  // Sets the portals from "HOST:PORT" texts (the first is host:port); false with *error set.
  bool set_portals(const std::vector<std::string>& texts, std::string* error);
  TargetSpec first_target() const { return {iqn, alias, luns, acl, chap, mutual_chap}; }
  void set_first_target(TargetSpec t);
  // The identity discovery sessions use: discovery_mutual_chap, else the first target's.
  const std::optional<iscsi::ChapCredentials>& discovery_identity() const {
    return discovery_mutual_chap ? discovery_mutual_chap : mutual_chap;
  }

  iscsi::NegotiationLimits limits = default_limits();
  uint32_t cmd_window = 128;             // commands in flight per session (MaxCmdSN - ExpCmdSN + 1)
  uint32_t max_transfer_bytes = 16u << 20;  // largest EDTL a command may carry
  uint32_t max_data_in_segment = 32768;     // Data-In PDU size cap (below the peer's MRDSL)
  // A data segment at least this long, not all in yet once its header is, is received straight
  // into the task's buffer (each costs one receive of its own; below this a copy is cheaper).
  uint32_t direct_rx_min = 32768;
  uint32_t login_timeout_ms = 15000;     // a connection must finish login in this time
  uint32_t nop_interval_ms = 20000;      // idle this long: ping with a NOP-In
  uint32_t nop_timeout_ms = 20000;       // unanswered ping this long: drop the connection
  uint32_t max_tasks = 1024;             // tasks in flight per LUN; more: TASK SET FULL
  // Task buffers one connection may hold: those of the commands it has started (READs
  // executing or answered and not yet sent, WRITEs asking for their data with R2Ts) and those
  // kept on finished tasks for reuse. A command that does not fit waits, in arrival order,
  // until earlier ones finish (one alone always starts). Without it a single initiator could
  // make the target hold cmd_window x max_transfer_bytes (2 GiB) of READ data it never reads.
  uint32_t connection_buffer_bytes = 64u << 20;
  // Task buffers all connections together may hold, split evenly over the I/O threads: each
  // connection's room is drawn from its thread's share. A command that fits its connection's
  // room but not the thread's share waits, with those of the thread's other connections, in the
  // order they began to wait; buffers kept on finished tasks are let go first, whichever
  // connection keeps them. Without it N initiators could make the target hold N times the
  // connection room (64 connections: 4 GiB).
  uint64_t buffer_bytes = 1ull << 30;
  // Connections at once (logging in or logged in, discovery ones too). One more gets its first
  // Login Request answered with "out of resources" (0x0302) and is closed; beyond a few dozen
  // such, new connections are closed at once.
  uint32_t max_connections = 1024;
  // READs of a file LUN served from its page cache in place go out with sendfile(2) when they
  // carry at least sendfile_min bytes: the kernel hands the page cache pages to the socket and
  // the target copies nothing (about 40% less target CPU per 256 KiB read). The receiver then
  // reads those pages itself. Over loopback that receiver is on this machine and finds them
  // cold in the cache, where the target's copy would have left them warm: libiscsi's reads of
  // 256 KiB went a third slower. So Auto uses sendfile for initiators on other machines only
  // (a peer address neither loopback nor the connection's own); On and Off for every one.
  enum class Sendfile : uint8_t { Auto, On, Off };
  Sendfile sendfile = Sendfile::Auto;
  uint32_t sendfile_min = 65536;

  bool operator==(const TargetSettings&) const = default;

  static iscsi::NegotiationLimits default_limits() {
    iscsi::NegotiationLimits l;
    l.initial_r2t = false;  // accept unsolicited Data-Out when the initiator wants it
    l.immediate_data = true;
    l.max_recv_data_segment_length = 262144;
    l.max_burst_length = 1u << 20;
    l.first_burst_length = 262144;
    l.max_outstanding_r2t = 8;
    return l;
  }
};

// Who may log in to one target and with which credentials.
struct TargetAccess {
  InitiatorAcl acl;
  std::optional<iscsi::ChapCredentials> chap;
  std::optional<iscsi::ChapCredentials> mutual_chap;
  // Removed by a reload: as if absent to logins and SendTargets, and its sessions end. Its
  // place stays (targets keep their indices; a target of the same name added later has another).
  bool removed = false;

  // Whether the target is there for this initiator.
  bool admits(std::string_view initiator, const IpAddress& peer) const { return !removed && acl.allows(initiator, peer); }

  bool operator==(const TargetAccess&) const = default;
};

struct AccessSettings;

// Settings replaced by reloads and read by the I/O threads (the access settings new logins
// get, the limits new connections get): a shared_ptr under a mutex, with a generation the
// threads look at (one atomic load) to know whether there is a new one to take. (Not
// std::atomic<std::shared_ptr>: libstdc++ 12's implementation unlocks its internal lock with
// relaxed order after a load, which ThreadSanitizer reports as a race with the next store.)
template <class T>
class Holder {
 public:
  explicit Holder(std::shared_ptr<const T> a = nullptr) : a_(std::move(a)) {}
  void store(std::shared_ptr<const T> a) {
    std::lock_guard lock(mu_);
    a_ = std::move(a);
    gen_.fetch_add(1, std::memory_order_release);
  }
  std::shared_ptr<const T> load() const {
    std::lock_guard lock(mu_);
    return a_;
  }
  // Changes with every store().
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const T> a_;
  std::atomic<uint64_t> gen_{0};
};
using AccessHolder = Holder<AccessSettings>;
// The settings connections accepted from now on take their limits from (a reload's [limits]).
using LimitsHolder = Holder<TargetSettings>;

// Who may log in and with which credentials: the part of the settings a running `vcp target`
// takes again from its files on SIGHUP (TargetServer::set_access). New logins use the current
// one; sessions already logged in go on.
struct AccessSettings {
  std::vector<TargetAccess> targets;  // as TargetSettings::all_targets()
  std::optional<iscsi::ChapCredentials> discovery_chap;
  // Mutual CHAP in discovery sessions: TargetSettings::discovery_identity().
  std::optional<iscsi::ChapCredentials> discovery_mutual_chap;
  std::vector<iscsi::ChapAlgorithm> chap_algorithms;  // TargetSettings::chap_algorithms
  // The portals SendTargets names for every target ("host:port,tpgt"): those not on a wildcard
  // address; with a wildcard portal, a connection through it adds the address it reached.
  // A reload that changes the portals replaces them (TargetServer::set_portals).
  std::vector<std::string> portal_addresses;
  bool wildcard_portal = false;

  static AccessSettings of(const TargetSettings& s);
  // Sets portal_addresses and wildcard_portal for these portals (their bound ports).
  void set_portals(const std::vector<Portal>& portals, uint16_t portal_group_tag);
};

// "auto", "on" or "off" (--sendfile, [limits] sendfile); false for anything else.
bool parse_sendfile(const std::string& v, TargetSettings::Sendfile* out);
const char* to_string(TargetSettings::Sendfile v);

// Parses "N=SPEC" (a --lun argument).
std::optional<LunSpec> parse_lun_arg(const std::string& arg, std::string* error);
// Parses "HOST:PORT" ("[v6]:PORT" for IPv6).
bool parse_portal(const std::string& arg, std::string* host, uint16_t* port, std::string* error);
// A portal on every address of the machine (0.0.0.0, ::): SendTargets must name the one in use.
bool is_wildcard(const std::string& host);
// Adds an initiator name (--allow-initiator) or an address range (--allow-address) to the
// access list; false with *error for a malformed one.
bool allow_initiator(InitiatorAcl& acl, const std::string& name, std::string* error);
bool allow_address(InitiatorAcl& acl, const std::string& range, std::string* error);
// Reads a CHAP credentials file: one line "NAME SECRET" (blank lines and # comments ignored).
std::optional<iscsi::ChapCredentials> read_chap_file(const std::string& path, std::string* error);
// Loads a TOML file into settings (keys the file has override what is there):
//   iqn, alias, portal = "HOST:PORT", cpus = "1-2", state_dir = "/var/lib/vcp", [[lun]] number/backend,
//   allowed_initiators = ["iqn...", ...], allowed_addresses = ["10.0.0.0/8", ...],
//   [chap] name/secret, [mutual_chap] name/secret, [discovery_chap] name/secret (or
//   [discovery_mutual_chap] name/secret (or chap_file / mutual_chap_file / discovery_chap_file /
//   discovery_mutual_chap_file paths), chap_algorithms = ["SHA256", "SHA3-256"] (or "SHA256:SHA3-256"),
//   [[target]] for each further target: iqn, alias, [[target.lun]], allowed_initiators,
//   allowed_addresses, [target.chap], [target.mutual_chap] (or chap_file, mutual_chap_file),
//   [limits] max_recv_data_segment_length, max_burst_length, first_burst_length,
//   max_outstanding_r2t, max_data_in_segment, direct_rx_min, initial_r2t, immediate_data, header_digest / data_digest
//   ("none", "allow", "prefer", "require"), cmd_window, login_timeout_ms, nop_interval_ms,
//   nop_timeout_ms, max_tasks, connection_buffer_bytes, buffer_bytes, max_connections,
//   sendfile ("auto", "on", "off"), sendfile_min.
bool load_toml(const std::string& path, TargetSettings& s, std::string* error);
// Final consistency checks (IQNs present and distinct, at least one LUN per target, distinct
// LUN numbers in each, secrets).
bool validate(const TargetSettings& s, std::string* error);

// The [limits] a running target takes on a reload (TargetServer::set_limits): what a session
// negotiates and keeps to (the negotiation keys, digests, cmd_window, max_data_in_segment,
// direct_rx_min, connection_buffer_bytes), its timeouts, sendfile and sendfile_min, which a
// connection takes when it is accepted and keeps, and max_connections. Copies them from `from`
// into `to` and returns the names of those that differed. connection_buffer_bytes only while
// it fits in a thread's share of `to`'s buffer_bytes (which needs a restart).
std::vector<std::string> take_live_limits(TargetSettings& to, const TargetSettings& from);
// The [limits] that need a restart (max_transfer_bytes, max_tasks, buffer_bytes: the logical
// units and the I/O threads are made with them; a connection_buffer_bytes take_live_limits
// left) where a and b differ, by name.
std::vector<std::string> restart_limits_differing(const TargetSettings& a, const TargetSettings& b);

}  // namespace vcp::target
