package l4

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls in this file never block: every socket and pipe the data plane
// touches is non-blocking. They are issued with RawSyscall so that the Go
// scheduler does not treat each of them as a potentially blocking system
// call (entersyscall/exitsyscall and the sysmon wake-ups that follow cost a
// measurable share of a core at high connection rates). An idle loop does
// not block in epoll_wait either: it parks on the runtime's poller (see
// loop.wait).

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// sockaddr is a raw socket address ready to pass to connect(2).
type sockaddr struct {
	raw unix.RawSockaddrAny
	len uint32
}

func sockaddrFrom(ap netip.AddrPort) sockaddr {
	var sa sockaddr
	addr := ap.Addr()
	if addr.Is4() {
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		p.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&p.Port))[:], ap.Port())
		p.Addr = addr.As4()
		sa.len = unix.SizeofSockaddrInet4
		return sa
	}
	p := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa.raw))
	p.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&p.Port))[:], ap.Port())
	p.Addr = addr.As16()
	sa.len = unix.SizeofSockaddrInet6
	return sa
}

func (sa *sockaddr) family() int { return int(sa.raw.Addr.Family) }

// addrPort converts a raw socket address to netip form without allocating.
// IPv4-mapped IPv6 addresses are unmapped so that a client reaching a
// dual-stack listener over IPv4 hashes like any other IPv4 client.
func (sa *sockaddr) addrPort() netip.AddrPort {
	switch sa.raw.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa.raw))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// rawAddrPort reads a kernel-filled socket address. It takes the raw
// struct, not a *sockaddr, because a RawSockaddrAny is smaller than a
// sockaddr and must never be written through one.
func rawAddrPort(raw *unix.RawSockaddrAny) netip.AddrPort {
	var sa sockaddr
	sa.raw = *raw
	return sa.addrPort()
}

func rawAccept4(fd int, sa *sockaddr) (int, error) {
	sa.len = unix.SizeofSockaddrAny
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)),
		uintptr(unsafe.Pointer(&sa.len)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawSocket(family int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawConnect(fd int, sa *sockaddr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)), uintptr(sa.len))
	return errnoErr(e)
}

func rawGetsockname(fd int, sa *sockaddr) error {
	sa.len = unix.SizeofSockaddrAny
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)), uintptr(unsafe.Pointer(&sa.len)))
	return errnoErr(e)
}

func rawSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return errnoErr(e)
}

func rawSoError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return errnoErr(unix.Errno(v))
}

// rawResetClose closes fd so that the peer sees a reset: SO_LINGER with a
// zero timeout makes close(2) abort the connection instead of sending FIN.
func rawResetClose(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	rawClose(fd)
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawShutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errnoErr(e)
}

func rawRead(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// rawPeek reads without consuming (MSG_PEEK), for the inbound PROXY header.
func rawPeek(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawSplice(in, out int, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// rawEpollPoll is epoll_wait with a zero timeout: it cannot block, so it
// skips the scheduler hand-off that a blocking wait needs.
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func (sa *sockaddr) ptr() unsafe.Pointer { return unsafe.Pointer(&sa.raw) }
