#include "target/scsi/pr_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.hpp"

namespace vcp::scsi {
namespace {

constexpr std::string_view kMagic = "vcp-pr 1\n";
constexpr size_t kMaxFile = 1 << 20;  // 128 registrations take some 20 KiB

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string directory_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool sync_directory(const std::string& path, std::string* error) {
  const std::string dir = directory_of(path);
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) {
    *error = errno_text("cannot sync the directory", dir);
    return false;
  }
  return true;
}

}  // namespace

std::string pr_store_path(const std::string& dir, const std::string& iqn, uint64_t lun) {
  std::string name;
  for (char c : iqn) {
    char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    bool keep = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '.' || l == ':' || l == '-';
    name += keep ? l : '_';
  }
  return dir + "/" + name + ".lun" + std::to_string(lun) + ".pr";
}

std::string PrStore::file_text(const PersistentReservations& pr) const {
  return std::string(kMagic) + "lu " + escape_word(serial_) + "\n" + pr.persisted_text();
}

bool PrStore::parse_file(std::string_view text, PersistentReservations* pr, std::string* serial, std::string* error) {
  if (text.substr(0, kMagic.size()) != kMagic) {
    *error = "not a reservations file of this version (its first line is not 'vcp-pr 1')";
    return false;
  }
  text.remove_prefix(kMagic.size());
  size_t end = text.find('\n');
  std::string_view lu = text.substr(0, end);
  std::optional<std::string> s;
  if (end == std::string_view::npos || lu.substr(0, 3) != "lu " || !(s = unescape_word(lu.substr(3))) ||
      lu.find(' ', 3) != std::string_view::npos) {
    *error = "line 2: expected 'lu SERIAL'";
    return false;
  }
  PersistentReservations next = *pr;
  if (!next.restore_text(text.substr(end + 1), error, 3)) return false;
  *pr = std::move(next);
  *serial = std::move(*s);
  return true;
}

bool PrStore::load(PersistentReservations* pr, Loaded* what, std::string* error) const {
  *what = Loaded::nothing;
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return true;
    *error = errno_text("cannot open", path_);
    return false;
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = errno_text("cannot read", path_);
      return false;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFile) {
      *error = path_ + ": larger than " + std::to_string(kMaxFile) + " bytes: not a reservations file";
      return false;
    }
  }
  PersistentReservations next = *pr;
  std::string serial;
  if (!parse_file(text, &next, &serial, error)) {
    *error = path_ + ": " + *error;
    return false;
  }
  if (serial != serial_) {
    *what = Loaded::other_lu;
    *error = path_ + " holds the reservations of the LU with serial '" + serial + "', not this one's ('" + serial_ + "')";
    return true;
  }
  *pr = std::move(next);
  *what = Loaded::restored;
  return true;
}

bool PrStore::save(const PersistentReservations& pr, std::string* error) const {
  const std::string tmp = path_ + ".new";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) {
    *error = errno_text("cannot create", tmp);
    return false;
  }
  if (!write_all(fd.get(), file_text(pr)) || ::fsync(fd.get()) != 0) {
    *error = errno_text("cannot write", tmp);
    ::unlink(tmp.c_str());
    return false;
  }
  fd.reset();
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    *error = errno_text("cannot rename " + tmp + " to", path_);
    ::unlink(tmp.c_str());
    return false;
  }
  return sync_directory(path_, error);
}

bool PrStore::erase(std::string* error) const {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    *error = errno_text("cannot remove", path_);
    return false;
  }
  return sync_directory(path_, error);
}

}  // namespace vcp::scsi
