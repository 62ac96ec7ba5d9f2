// Persistent reservations (SPC-4 5.13): registrations per I_T nexus, one reservation per LU,
// the access rules per reservation type, and the PERSISTENT RESERVE IN/OUT service actions.
//
// Pure state: no I/O, no threads. The Lun calls conflicts() before every command and hands
// PERSISTENT RESERVE IN/OUT here; side effects on other nexuses (unit attentions, aborted
// tasks) come back through PrEvents. Persisting through a restart (APTPL) is the owner's job
// (SharedLuState with a PrStore): this class says whether it is asked for (ptpl_active()) and
// gives its state as text (persisted_text(), restore_text()).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "target/scsi/task.hpp"

namespace vcp::scsi {

enum class PrType : uint8_t {
  none = 0,
  write_exclusive = 1,
  exclusive_access = 3,
  write_exclusive_registrants_only = 5,
  exclusive_access_registrants_only = 6,
  write_exclusive_all_registrants = 7,
  exclusive_access_all_registrants = 8,
};

// What a command does to the medium, for the conflict rules.
enum class PrAccess : uint8_t { allowed, read, write };

struct Registration {
  std::string initiator_name;
  uint64_t isid = 0;
  uint16_t target_port = 0;
  uint64_t key = 0;

  bool is(const ItNexus& n) const {
    return isid == n.isid && target_port == n.target_port && initiator_name == n.initiator_name;
  }
  // The I_T nexus identity it names (no id: for matching by port, ItNexus::same_port_as).
  ItNexus port() const {
    ItNexus n;
    n.initiator_name = initiator_name;
    n.isid = isid;
    n.target_port = target_port;
    return n;
  }
  static Registration of(const ItNexus& n, uint64_t key = 0) {
    return Registration{n.initiator_name, n.isid, n.target_port, key};
  }
  bool operator==(const Registration&) const = default;
};

class PrEvents {
 public:
  virtual ~PrEvents() = default;
  // Establish a unit attention for the I_T nexus a registration names.
  virtual void pr_unit_attention(const Registration& who, Asc asc) = 0;
  // PREEMPT AND ABORT: abort every task from that I_T nexus.
  virtual void pr_abort_tasks(const Registration& who) = 0;
};

class PersistentReservations {
 public:
  static constexpr size_t kMaxRegistrations = 128;

  bool conflicts(const ItNexus& n, PrAccess access) const;
  bool registered(const ItNexus& n) const { return find(n) != nullptr; }
  bool reserved() const { return type_ != PrType::none; }
  PrType type() const { return type_; }
  // The reserving I_T nexus (meaningless for the all-registrants types and when not reserved).
  const Registration& holder() const { return holder_; }
  uint32_t generation() const { return generation_; }
  size_t registrations() const { return regs_.size(); }

  // Persist through power loss (SPC-4 5.13.5): with the capability (PTPL_C, set by an owner
  // that can keep the state), a REGISTER or REGISTER AND IGNORE EXISTING KEY with APTPL set
  // activates it and one without deactivates it (PTPL_A); without the capability APTPL is
  // refused (INVALID FIELD IN PARAMETER LIST).
  void set_ptpl_capable(bool on) { ptpl_capable_ = on; }
  bool ptpl_capable() const { return ptpl_capable_; }
  bool ptpl_active() const { return ptpl_active_; }

  // The registrations, the reservation and the generation as lines of text (what a restart
  // restores), and back. restore_text() takes text read from a file: anything malformed is
  // refused with *error naming the line, and the object is left as it was.
  std::string persisted_text() const;
  // first_line: the number of the text's first line in its file, for the error.
  bool restore_text(std::string_view text, std::string* error, unsigned first_line = 1);

  // PERSISTENT RESERVE IN: appends the parameter data for the service action to out.
  Outcome in(const uint8_t* cdb, std::vector<uint8_t>& out) const;
  // PERSISTENT RESERVE OUT with its parameter list (param_len bytes received).
  Outcome out(const ItNexus& n, const uint8_t* cdb, const uint8_t* param, uint32_t param_len, PrEvents& ev);

 private:
  const Registration* find(const ItNexus& n) const;
  Registration* find(const ItNexus& n);
  bool all_registrants() const;
  bool is_holder(const ItNexus& n) const;
  bool holder_is(const Registration& r) const;
  void release(PrEvents& ev, const ItNexus* releaser);
  Outcome do_register(const ItNexus& n, uint64_t key, uint64_t sa_key, bool ignore_key, PrEvents& ev);
  Outcome do_reserve(const ItNexus& n, PrType type);
  Outcome do_release(const ItNexus& n, PrType type, PrEvents& ev);
  Outcome do_clear(const ItNexus& n, PrEvents& ev);
  Outcome do_preempt(const ItNexus& n, uint64_t sa_key, PrType type, bool abort, PrEvents& ev);
  void read_full_status(std::vector<uint8_t>& out) const;

  std::vector<Registration> regs_;
  PrType type_ = PrType::none;
  Registration holder_;  // the reserving I_T nexus (unused for the all-registrants types)
  uint32_t generation_ = 0;
  bool ptpl_capable_ = false;
  bool ptpl_active_ = false;
};

// "Exclusive Access", "Write Exclusive - Registrants Only", ... (SPC-4's names).
const char* to_string(PrType t);

// A text as one word of a state file: every byte outside '!'..'~', and '%' itself, as %XX;
// the empty text as "-". unescape_word() undoes it (nullopt for a malformed escape).
std::string escape_word(const std::string& text);
std::optional<std::string> unescape_word(std::string_view word);

// The iSCSI TransportID of an initiator port (SPC-4 7.6.4.6, format 01b: name,i,0xISID).
void append_iscsi_transport_id(std::vector<uint8_t>& out, const std::string& name, uint64_t isid);

}  // namespace vcp::scsi
