package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// socketMode is the admin socket's mode: only lbd's own user may connect,
// because whoever can connect can drain, disable and reload.
const socketMode = 0o600

// dirMode is the mode of the socket's directory when lbd creates it.
const dirMode = 0o750

// maxSocketPath is the longest path a unix socket can be bound to:
// sun_path holds 108 bytes on Linux, one of them the terminating NUL.
const maxSocketPath = 107

// probeTimeout bounds the connect that tells a live socket from a stale one.
// A live lbd accepts in microseconds; a stale socket refuses at once.
const probeTimeout = time.Second

// listenSocket binds a unix socket at path with mode 0600 and returns its
// listener. The socket never exists at path with a wider mode: it is bound
// inside a fresh private directory next to path (mode 0700, so nobody else
// can connect while it is still wider), chmodded, and then renamed into
// place. Only when that temporary path would be too long for sun_path is
// the socket bound at path directly and chmodded right after; the directory
// of path then guards the short window.
//
// A file already at path is handled first (see clearStale). Two lbds
// starting in the same instant can both pass that check; the later rename
// wins the path and the earlier one keeps serving an unreachable socket.
func listenSocket(path string) (*net.UnixListener, error) {
	if len(path) > maxSocketPath {
		// Clients could not connect to it, though rename would put it there.
		return nil, fmt.Errorf("admin socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	tmpDir, err := os.MkdirTemp(dir, ".lbd")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return bind(path)
	}
	ln, err := bind(tmp)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// bind listens on a unix socket at path and sets its mode to socketMode.
// The listener does not unlink path on Close: the socket may be renamed
// after bind, and Server.Close removes it only while it is still ours.
func bind(path string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// clearStale makes way for a new socket at path. Nothing there is fine. A
// socket that refuses connections was left by a lbd that died without
// cleaning up, and is removed. A socket that accepts belongs to a running
// lbd, and anything that is not a socket is not ours to remove: both are
// errors.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin socket %s: exists and is not a socket", path)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another lbd is serving %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin socket: removing stale socket: %w", err)
	}
	return nil
}
