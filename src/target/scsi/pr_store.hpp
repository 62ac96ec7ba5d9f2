// Where the persistent reservations of one logical unit are kept through a restart (APTPL,
// SPC-4 5.13.5): one small text file per LUN in the target's state directory.
//
//   vcp-pr 1
//   lu SERIAL                 the LU's serial (VPD 0x80) when the state was written
//   generation N ...          PersistentReservations::persisted_text()
//
// save() replaces the file atomically and durably (a new file written, fsync'd, renamed over the
// old one, the directory fsync'd): a crash leaves the old state or the new one, never a mix.
// It runs on the I/O thread that executes the PERSISTENT RESERVE OUT, under the LU's lock: the
// command's status is sent only once its state is on disk (a registration acknowledged is one
// a restart keeps). PERSISTENT RESERVE OUT is rare; LIO writes its APTPL file the same way.
#pragma once

#include <string>

#include "target/scsi/pr.hpp"

namespace vcp::scsi {

class PrStore {
 public:
  PrStore(std::string path, std::string lu_serial) : path_(std::move(path)), serial_(std::move(lu_serial)) {}

  const std::string& path() const { return path_; }

  enum class Loaded {
    nothing,   // no file: nothing was kept
    restored,  // *pr holds the kept state (APTPL active)
    other_lu,  // the file was written for another LU (its serial differs): not restored
  };
  // Reads the file into *pr. False with *error when it is there but cannot be read or is not
  // a state this version wrote (the caller refuses to serve the LUN rather than drop
  // reservations an initiator was told are kept). For other_lu, *error says whose it was.
  bool load(PersistentReservations* pr, Loaded* what, std::string* error) const;
  // Writes the state (APTPL active), or removes the file (APTPL no longer active).
  bool save(const PersistentReservations& pr, std::string* error) const;
  bool erase(std::string* error) const;

  // The file's whole text for a state, and back (what load() and save() use; the fuzz target
  // feeds parse_file() anything).
  std::string file_text(const PersistentReservations& pr) const;
  static bool parse_file(std::string_view text, PersistentReservations* pr, std::string* serial, std::string* error);

 private:
  std::string path_;
  std::string serial_;
};

// The file of LUN `lun` of target `iqn` in directory `dir`: DIR/IQN.lunN.pr, the name lowered
// (iSCSI names compare without regard to case) and anything but [a-z0-9.:-] written as '_'.
std::string pr_store_path(const std::string& dir, const std::string& iqn, uint64_t lun);

}  // namespace vcp::scsi
