package server

import (
	"os"

	"golang.org/x/sys/unix"
)

// notify sends a systemd notification (sd_notify) when NOTIFY_SOCKET is
// set, and does nothing otherwise. The datagram is sent without blocking: a
// notification socket nobody reads (its queue full) must never hold up a
// reload or a shutdown, so a notification that cannot go at once is lost
// and reported, for the caller to log at debug level. systemd reports a
// missing READY by itself.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, []byte(state), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, &unix.SockaddrUnix{Name: path}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	return nil
}

// notify sends state to systemd, logging a lost notification at debug
// level.
func (s *Server) notify(state string) {
	if err := notify(state); err != nil {
		s.log.Debug("sd_notify lost", "state", state, "err", err)
	}
}
