package l4

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The batched I/O of UDP forwarding: client datagrams read with recvmmsg,
// each flow's sent to its backend with one sendmmsg, replies read with
// recvmmsg into the reply batch and sent back with sendmmsg from the
// address the client sent to (IP_PKTINFO and IPV6_PKTINFO).

// udpBatchBufs is one direction's batch: messages, their buffers, addresses
// and control data, allocated once per loop.
type udpBatchBufs struct {
	msgs  [udpBatch]unix.Mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrAny
	oob   [udpBatch][oobSize]byte
	bufs  [udpBatch][]byte
}

func newBatchBufs() *udpBatchBufs {
	b := &udpBatchBufs{}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, udpBufSize)
	}
	return b
}

// listenUDP opens a non-blocking SO_REUSEPORT UDP socket. On a wildcard
// bind it reports each datagram's destination address, which replies then
// leave from; a socket bound to one address needs neither.
func listenUDP(bind netip.AddrPort) (int, netip.AddrPort, error) {
	pktinfo := bind.Addr().IsUnspecified()
	return bindSocket(bind, unix.SOCK_DGRAM, func(fd, family int) (string, error) {
		// A burst of small datagrams overflows the default receive
		// buffer (about 200 KiB) long before the loop falls behind on
		// average: ask for more, forcing past rmem_max where the
		// process may.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRcvBuf) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, udpRcvBuf)
		}
		if !pktinfo {
			return "", nil
		}
		// IP_PKTINFO also serves IPv4 clients of a dual-stack socket.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil && family == unix.AF_INET {
			return "setsockopt", err
		}
		if family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
				return "setsockopt", err
			}
		}
		return "", nil
	}, nil)
}

// udpRecv reads client datagrams from ll in batches and forwards each to
// its flow's backend.
func (l *loop) udpRecv(ll *loopListener) {
	u := l.udp
	in := u.in
	for round := 0; round < 8; round++ {
		for i := range in.msgs {
			in.iovs[i] = unix.Iovec{Base: &in.bufs[i][0]}
			in.iovs[i].SetLen(udpBufSize)
			h := &in.msgs[i].Hdr
			h.Name = (*byte)(unsafe.Pointer(&in.names[i]))
			h.Namelen = unix.SizeofSockaddrAny
			h.Iov = &in.iovs[i]
			h.Iovlen = 1
			h.Control = &in.oob[i][0]
			h.SetControllen(oobSize)
			h.Flags = 0
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(ll.fd), uintptr(unsafe.Pointer(&in.msgs[0])), udpBatch, unix.MSG_DONTWAIT, 0, 0)
		if e != 0 {
			if e != unix.EAGAIN && e != unix.EINTR {
				l.log.Debug("recvmmsg", "listener", ll.ln.Config().Name, "err", e)
			}
			return
		}
		n := int(r)
		for i := 0; i < n; i++ {
			m := &in.msgs[i]
			client := rawAddrPort(&in.names[i])
			local := pktinfoAddr(in.oob[i][:m.Hdr.Controllen])
			l.udpQueue(ll, client, local, i)
		}
		l.udpSendQueued()
		if n < udpBatch {
			return
		}
	}
	// More may be waiting: come back after the other events.
	if !ll.more {
		ll.more = true
		l.accepting = append(l.accepting, ll)
	}
}

// pktinfoAddr extracts the destination address from IP_PKTINFO or
// IPV6_PKTINFO control data.
func pktinfoAddr(oob []byte) netip.Addr {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return netip.Addr{}
		}
		data := oob[unix.SizeofCmsghdr:h.Len]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(pi.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap()
		}
		next := unix.CmsgSpace(int(h.Len) - unix.SizeofCmsghdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.Addr{}
}

// udpQueue adds datagram i of the batch just read to its flow's queue,
// making the flow when it is new.
func (l *loop) udpQueue(ll *loopListener, client netip.AddrPort, local netip.Addr, i int) {
	u := l.udp
	var f *flow
	if idx, ok := u.byKey[flowKey{ll.ln, client, local}]; ok {
		f = u.flows.items[idx]
	} else {
		var reason int
		f, reason = l.newFlow(ll, client, local)
		if f == nil {
			ll.ln.udpStats[l.id].Dropped[reason].Add(1)
			return
		}
	}
	u.pendNext[i] = -1
	if f.pendFirst < 0 {
		f.pendFirst = int16(i)
		u.pendFlows = append(u.pendFlows, f)
	} else {
		u.pendNext[f.pendLast] = int16(i)
	}
	f.pendLast = int16(i)
}

// udpSendQueued sends each flow's queued datagrams to its backend with one
// sendmmsg on the flow's connected socket, each behind the flow's PROXY
// header if it has one.
func (l *loop) udpSendQueued() {
	u := l.udp
	in := u.in
	for _, f := range u.pendFlows {
		if !f.live {
			// Ended while its datagrams waited (it cannot be, since
			// eviction spares such flows; kept as a guard).
			f.pendFirst, f.pendLast = -1, -1
			continue
		}
		k := 0
		for i := f.pendFirst; i >= 0; i = u.pendNext[i] {
			iov := &u.fwdIov[k]
			n := 0
			if f.header != nil {
				iov[0] = unix.Iovec{Base: &f.header[0]}
				iov[0].SetLen(len(f.header))
				n = 1
			}
			size := int(in.msgs[i].Len)
			if size > 0 || n == 0 {
				iov[n] = unix.Iovec{Base: &in.bufs[i][0]}
				iov[n].SetLen(size)
				n++
			}
			u.fwd[k].Hdr = unix.Msghdr{Iov: &iov[0]}
			u.fwd[k].Hdr.SetIovlen(n)
			u.fwdSize[k] = size
			k++
		}
		f.pendFirst, f.pendLast = -1, -1
		l.sendFlow(f, k)
	}
	clear(u.pendFlows)
	u.pendFlows = u.pendFlows[:0]
}

// sendFlow sends the first k messages of udpState.fwd on f's socket.
func (l *loop) sendFlow(f *flow, k int) {
	u := l.udp
	st := &f.ln.udpStats[l.id]
	sent, ok := 0, 0
	var bytes uint64
	for sent < k && f.live {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(f.fd), uintptr(unsafe.Pointer(&l.udp.fwd[sent])), uintptr(k-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.ECONNREFUSED:
			// An ICMP port unreachable from the backend: the flow
			// ends, and what it had queued is lost with it.
			st.Dropped[DropBackendError].Add(uint64(k - sent))
			l.countSent(f, ok, bytes)
			l.flowRefused(f)
			return
		case e != 0:
			// The first message failed (a full send buffer, say): drop
			// it and go on with the rest.
			st.Dropped[DropBackendError].Add(1)
			sent++
			continue
		}
		for _, size := range u.fwdSize[sent : sent+int(r)] {
			bytes += uint64(size)
		}
		sent += int(r)
		ok += int(r)
	}
	l.countSent(f, ok, bytes)
}

// countSent records n datagrams of size bytes sent on f.
func (l *loop) countSent(f *flow, n int, bytes uint64) {
	if n == 0 {
		return
	}
	f.lastSeen = l.now
	f.requests += n
	f.ln.udpStats[l.id].ToBackend.Add(uint64(n))
	f.backend.Stats(l.id).BytesToBackend.Add(bytes)
}

// udpReplies reads the backend's replies on a flow, in batches with
// recvmmsg straight into the free slots of the reply batch, and queues them
// for the client. A short batch means the socket is empty, so no further
// read is spent on learning that.
func (l *loop) udpReplies(f *flow) {
	u := l.udp
	out := u.out
	for round := 0; f.live; round++ {
		if round == udpReplyRounds {
			// A backend that keeps sending must not hold the loop: the
			// rest waits until the other events have had their turn
			// (the socket is edge-triggered, so it is read again
			// without a new edge).
			u.moreReplies = append(u.moreReplies, timerRef{kind: kindUDP, slot: f.slot, gen: f.gen})
			return
		}
		lfd := l.listenerFD(f.ln)
		if lfd < 0 {
			// The listener is gone from this loop (a reload removed
			// it): nothing can carry replies.
			l.closeFlow(f)
			return
		}
		if u.outN > 0 && u.outFd != lfd {
			l.udpFlush()
		}
		first := u.outN
		room := udpBatch - first
		for i := first; i < udpBatch; i++ {
			out.iovs[i] = unix.Iovec{Base: &out.bufs[i][0]}
			out.iovs[i].SetLen(udpBufSize)
			out.msgs[i].Hdr = unix.Msghdr{Iov: &out.iovs[i], Iovlen: 1}
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(f.fd), uintptr(unsafe.Pointer(&out.msgs[first])), uintptr(room), unix.MSG_DONTWAIT, 0, 0)
		if e != 0 {
			switch e {
			case unix.EAGAIN:
			case unix.ECONNREFUSED:
				f.ln.udpStats[l.id].Dropped[DropBackendError].Add(1)
				l.flowRefused(f)
			case unix.EINTR:
				continue
			default:
				// Other ICMP errors (host unreachable, say) are
				// reported once, ahead of queued datagrams: count
				// and read on.
				f.ln.udpStats[l.id].Dropped[DropBackendError].Add(1)
				continue
			}
			return
		}
		got := int(r)
		if got > 0 && f.replies == 0 {
			f.cfg.Pool.ConnectSucceeded(f.backend)
		}
		u.outFd, u.outLn = lfd, f.ln
		var bytes uint64
		lim := f.cfg.UDPResponses
		done, extra := false, 0
		for j := 0; j < got; j++ {
			i := first + j
			n := int(out.msgs[i].Len)
			l.queueReply(i, f, n)
			u.outN++
			f.replies++
			bytes += uint64(n)
			if lim > 0 && f.replies >= f.requests*lim {
				// Every request has its replies: the flow ends, and
				// any datagram read past them goes with it.
				done, extra = true, got-j-1
				break
			}
		}
		f.lastSeen = l.now
		f.backend.Stats(l.id).BytesToClient.Add(bytes)
		if u.outN == udpBatch {
			l.udpFlush()
		}
		if done {
			// The socket serves another client only if the backend sent
			// no more than it was asked for.
			if extra > 0 {
				f.ln.udpStats[l.id].Dropped[DropBackendError].Add(uint64(extra))
				l.closeFlow(f)
			} else if f.cfg.UDPReuseSockets {
				l.spareFlow(f)
			} else {
				l.closeFlow(f)
			}
			return
		}
		if got < room {
			return
		}
	}
}

// udpReplyRounds bounds the recvmmsg batches one wake reads from a flow's
// backend, as udpRecv bounds a listener's.
const udpReplyRounds = 8

// runMoreReplies reads on the flows udpReplies left with replies waiting.
func (l *loop) runMoreReplies() {
	u := l.udp
	more := u.moreReplies
	u.moreReplies = nil
	for _, r := range more {
		if f := u.flows.at(r.slot); f != nil && f.live && f.gen == r.gen {
			l.udpReplies(f)
		}
	}
}

// queueReply fills out-batch slot i: n bytes already read into its buffer,
// to f's client, from f's local address.
func (l *loop) queueReply(i int, f *flow, n int) {
	out := l.udp.out
	out.iovs[i] = unix.Iovec{Base: &out.bufs[i][0]}
	out.iovs[i].SetLen(n)
	out.names[i] = f.dst.raw
	h := &out.msgs[i].Hdr
	h.Name = (*byte)(unsafe.Pointer(&out.names[i]))
	h.Namelen = f.dst.len
	h.Iov = &out.iovs[i]
	h.Iovlen = 1
	h.Flags = 0
	h.Control, h.Controllen = nil, 0
	if f.local.IsValid() {
		h.Control = &out.oob[i][0]
		h.SetControllen(writePktinfo(out.oob[i][:], f.local, f.dst.family()))
	}
}

// writePktinfo writes the control message that sets a reply's source
// address, and returns its length.
func writePktinfo(oob []byte, src netip.Addr, family int) int {
	clear(oob)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.SizeofCmsghdr])
	if family == unix.AF_INET && src.Is4() {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		(*unix.Inet4Pktinfo)(data).Spec_dst = src.As4()
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	(*unix.Inet6Pktinfo)(data).Addr = src.As16()
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}

// udpFlush sends the queued replies with sendmmsg.
func (l *loop) udpFlush() {
	u := l.udp
	if u == nil || u.outN == 0 {
		return
	}
	st := &u.outLn.udpStats[l.id]
	sent := 0
	for sent < u.outN {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(u.outFd), uintptr(unsafe.Pointer(&u.out.msgs[sent])), uintptr(u.outN-sent), unix.MSG_DONTWAIT, 0, 0)
		if e != 0 {
			if e == unix.EINTR {
				continue
			}
			// The first message failed (a full send buffer, or that
			// client is unreachable): drop it and go on with the rest.
			st.Dropped[DropClientError].Add(1)
			sent++
			continue
		}
		st.ToClient.Add(uint64(r))
		sent += int(r)
	}
	u.outN = 0
}

// listenerFD is this loop's socket for ln, or -1.
func (l *loop) listenerFD(ln *Listener) int {
	for _, ll := range l.lns {
		if ll != nil && ll.ln == ln {
			return ll.fd
		}
	}
	return -1
}
