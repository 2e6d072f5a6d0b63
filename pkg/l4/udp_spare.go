package l4

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spare sockets: a flow that got every reply it waited for can leave its
// backend socket, drained, to the next new flow to that backend
// (udp_reuse_sockets), which saves a socket, a connect and a close.

// takeSpare returns a spare socket connected to addr, drained, or nil, for
// a new flow of ll. Datagrams that reached a spare socket belong to no flow:
// they are dropped, counted on ll, and the socket with them.
func (l *loop) takeSpare(ll *loopListener, addr netip.AddrPort) *flow {
	u := l.udp
	st := &ll.ln.udpStats[l.id]
	for {
		list := u.spare[addr]
		if len(list) == 0 {
			return nil
		}
		f := list[len(list)-1]
		list[len(list)-1] = nil
		u.spare[addr] = list[:len(list)-1]
		if len(list) == 1 {
			delete(u.spare, addr)
		}
		u.nSpare--
		f.spare = false
		usable, stray := l.drain(f.fd)
		if stray > 0 {
			// The backend answered the ended flow once more than it was
			// asked: what else it sends late could reach this client.
			st.Dropped[DropBackendError].Add(uint64(stray))
			usable = false
		}
		if usable {
			return f
		}
		// Or a pending error: the backend went away.
		l.dropFlowSocket(f)
	}
}

// drain reads fd until it is empty, and reports whether it is still usable
// and how many datagrams it held (replies nobody waits for). A datagram
// longer than the buffer is still consumed whole, the rest cut off; the
// batch buffers hold datagrams in flight and must not be used.
func (l *loop) drain(fd int) (usable bool, stray int) {
	var buf [64]byte
	for {
		_, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		switch e {
		case 0:
			stray++
		case unix.EINTR:
		case unix.EAGAIN:
			return true, stray
		default:
			return false, stray
		}
	}
}

// spareFlow ends f, which got every reply it was waiting for, and keeps its
// socket as a spare when there is room; otherwise f closes.
func (l *loop) spareFlow(f *flow) {
	u := l.udp
	if !f.live {
		return
	}
	if u.nSpare >= spareFlowsMax || len(u.spare[f.addr]) >= spareFlowsPerAddr {
		l.closeFlow(f)
		return
	}
	l.endFlow(f)
	f.live, f.spare = false, true
	u.spare[f.addr] = append(u.spare[f.addr], f)
	u.nSpare++
	f.lastSeen = l.now
	f.timerTick = l.wheel.add(timerRef{kind: kindUDP, slot: f.slot, gen: f.gen}, l.now+spareFlowIdle)
}

// closeSpare closes a spare socket and frees its flow.
func (l *loop) closeSpare(f *flow) {
	u := l.udp
	list := u.spare[f.addr]
	for i, g := range list {
		if g == f {
			list = append(list[:i], list[i+1:]...)
			list = list[:len(list):len(list)]
			break
		}
	}
	if len(list) == 0 {
		delete(u.spare, f.addr)
	} else {
		u.spare[f.addr] = list
	}
	u.nSpare--
	f.spare = false
	l.dropFlowSocket(f)
}

// closeSpares closes the spare sockets connected to addr.
func (l *loop) closeSpares(addr netip.AddrPort) {
	for len(l.udp.spare[addr]) > 0 {
		l.closeSpare(l.udp.spare[addr][0])
	}
}
