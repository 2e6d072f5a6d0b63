package l4

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// UDP forwarding. A flow is one client address and port on one listener.
// Its first datagram picks a backend; the flow then owns a connected UDP
// socket to that backend, registered in the loop's epoll, on which the
// backend's replies arrive. Replies go back out of the listener's socket
// from the very address the client sent to (IP_PKTINFO), in batches with
// sendmmsg; client datagrams come in batches with recvmmsg. Flows live in a
// per-loop table, like TCP connections, so no lock is shared.

const (
	udpBatch = 32
	// udpBufSize holds the largest UDP payload (65507 bytes over IPv4) and
	// then some.
	udpBufSize = 1 << 16
	oobSize    = 64 // room for one in_pktinfo or in6_pktinfo control message
	udpRcvBuf  = 4 << 20

	// A flow that ends with every request answered (udp_responses) leaves
	// its socket, still connected to the backend and registered in epoll,
	// for the next new flow to that address: one read to drain it instead
	// of socket, connect, epoll_ctl and close. At most spareFlowsPerAddr
	// wait per backend address and spareFlowsMax per loop, each for at
	// most spareFlowIdle.
	spareFlowsPerAddr = 64
	spareFlowsMax     = 1024
	spareFlowIdle     = int64(2 * time.Second)
)

// UDP drop reasons, counted per listener.
const (
	DropMaxFlows     = iota // udp_max_flows reached
	DropNoBackend           // no usable backend for a new flow
	DropBackendError        // the backend socket refused the datagram
	DropClientError         // the reply could not be sent to the client
	DropEvicted             // a flow without a reply gave its place to a new one: one per flow
	numDropReasons
)

// DropReasons names the drop counters, in index order, as the metrics
// label them.
var DropReasons = [numDropReasons]string{"max_flows", "no_backend", "backend_error", "client_error", "evicted"}

// UDPLoopStats are one loop's UDP counters for one listener.
type UDPLoopStats struct {
	ToBackend atomic.Uint64
	ToClient  atomic.Uint64
	Dropped   [numDropReasons]atomic.Uint64
	_         [16]byte
}

// flow is one UDP client of one listener, in one loop.
type flow struct {
	slot    int32
	gen     uint32
	live    bool
	spare   bool // not live: its socket waits in udpState.spare
	fd      int
	addr    netip.AddrPort // the backend address fd is connected to
	ln      *Listener
	cfg     *ListenerConfig
	backend *pool.Backend
	client  netip.AddrPort
	local   netip.Addr // where the client sent to: the source of replies
	// requests and replies count datagrams each way. With udp_responses
	// N the flow ends once every request has had its N replies, so a
	// client with several queries in flight on one port (as resolvers
	// and dnsperf do) gets all its answers.
	requests  int
	replies   int
	start     int64 // when the flow began, for UDPReplyTimeout
	lastSeen  int64
	timerTick int64
	header    []byte // PROXY v2 header prepended to every datagram, or nil
	dst       sockaddr
	// pendFirst and pendLast chain the datagrams of the batch being read
	// that go to this flow (through udpState.pendNext), -1 for none.
	pendFirst, pendLast int16
}

// flowKey names a flow: the same client port talking to two addresses of
// a wildcard bind is two flows, each answered from its own address.
type flowKey struct {
	ln     *Listener
	client netip.AddrPort
	local  netip.Addr
}

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

// udpState is a loop's UDP machinery, made when its first udp listener
// arrives so that TCP-only loops carry none of it.
type udpState struct {
	in       *udpBatchBufs
	out      *udpBatchBufs
	outN     int
	outFd    int
	outLn    *Listener
	outFlows [udpBatch]*pool.Backend
	flows    slotTable[flow] // see slots.go
	byKey    map[flowKey]int32
	// byKeyPeak is byKey's largest size since it was last made: a map
	// shrunk to a quarter of it is copied (endFlow).
	byKeyPeak int
	// spare are the sockets of ended flows, by backend address, newest
	// last; nSpare counts them all.
	spare  map[netip.AddrPort][]*flow
	nSpare int

	// unanswered are the flows, in order of creation, that had no reply
	// when filed: the ones a full table gives up first. Entries of flows
	// that have since ended or been answered are skipped and dropped.
	unanswered []timerRef
	// moreReplies are flows whose backend had more replies than one
	// wake's budget: read again after the other events.
	moreReplies []timerRef

	// The client datagrams of one recvmmsg batch, grouped by flow, so
	// that each flow's go to its backend in one sendmmsg.
	pendNext  [udpBatch]int16
	pendFlows []*flow
	fwd       [udpBatch]unix.Mmsghdr
	fwdIov    [udpBatch][2]unix.Iovec
	fwdSize   [udpBatch]int // payload bytes of each fwd message
}

func (l *loop) udpInit() {
	if l.udp == nil {
		l.udp = &udpState{in: newBatchBufs(), out: newBatchBufs(), byKey: map[flowKey]int32{},
			spare:     map[netip.AddrPort][]*flow{},
			pendFlows: make([]*flow, 0, udpBatch)}
	}
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

// newFlow picks a backend for a new client and opens the flow's socket.
func (l *loop) newFlow(ll *loopListener, client netip.AddrPort, local netip.Addr) (*flow, int) {
	ln := ll.ln
	cfg := ln.cfg.Load()
	// Reserve the flow's place first: loops create flows concurrently, and
	// a check followed by an increment could overshoot the limit.
	if n := ln.active.Add(1); cfg.UDPMaxFlows > 0 && n > int64(cfg.UDPMaxFlows) {
		ln.active.Add(-1)
		// A flow that never had a reply is most likely a forged source:
		// it gives its place up to this one.
		if cfg.UDPReplyTimeout <= 0 || !l.evictUnanswered(ln) {
			return nil, DropMaxFlows
		}
		if n := ln.active.Add(1); n > int64(cfg.UDPMaxFlows) {
			ln.active.Add(-1)
			return nil, DropMaxFlows
		}
	}
	reserved := true
	defer func() {
		if reserved {
			ln.active.Add(-1)
		}
	}()
	snap := cfg.Pool.Snapshot()
	picker := l.picker(ln, snap)
	key := balancer.HashKey(client.Addr(), client.Port(), snap.HashPort)
	var tried balancer.Tried
	for tried.Len() < balancer.MaxTried {
		idx := picker.Pick(key, &tried)
		if idx < 0 {
			break
		}
		tried.Add(idx)
		b := snap.Backends[idx]
		if m := b.MaxConn.Load(); m > 0 && b.Active.Load() >= m {
			continue
		}
		var f *flow
		if cfg.UDPReuseSockets {
			f = l.takeSpare(ll, b.Addr)
		}
		if f != nil {
			l.startFlow(f, ll, cfg, b, client, local)
			reserved = false // the flow holds it now
			return f, 0
		}
		fd, err := l.dialUDP(b.Addr)
		if err != nil {
			l.log.Debug("udp backend socket", "backend", b.Name, "err", err)
			if outOfDescriptors(err) {
				return nil, DropNoBackend
			}
			if localConnectError(err) {
				continue
			}
			b.Stats(l.id).ConnectErrors.Add(1)
			cfg.Pool.ConnectFailed(b)
			continue
		}
		f = l.allocFlow()
		f.fd, f.addr = fd, b.Addr
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: f.slot, Pad: int32(f.gen<<tagBits) | tagFlow}
		if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			rawClose(fd)
			l.freeFlow(f)
			return nil, DropNoBackend
		}
		l.startFlow(f, ll, cfg, b, client, local)
		reserved = false // the flow holds it now
		return f, 0
	}
	return nil, DropNoBackend
}

// startFlow makes f, whose socket is connected to b and registered, the
// live flow of client.
func (l *loop) startFlow(f *flow, ll *loopListener, cfg *ListenerConfig, b *pool.Backend, client netip.AddrPort, local netip.Addr) {
	ln := ll.ln
	f.live = true
	f.ln, f.cfg, f.backend = ln, cfg, b
	f.client, f.local = client, local
	f.requests, f.replies = 0, 0
	f.start, f.lastSeen = l.now, l.now
	f.timerTick = -1
	f.header = nil
	f.pendFirst, f.pendLast = -1, -1
	f.dst = sockaddrFrom(client)
	if cfg.ProxyProtocol == ProxyV2 {
		f.header = udpProxyHeader(client, netip.AddrPortFrom(localOr(local, ln.addr.Addr()), ln.addr.Port()))
	}
	l.udp.byKey[flowKey{ln, client, local}] = f.slot
	l.udp.byKeyPeak = max(l.udp.byKeyPeak, len(l.udp.byKey))
	ln.stats[l.id].Connections.Add(1)
	b.Active.Add(1)
	b.Stats(l.id).Connections.Add(1)
	if cfg.UDPReplyTimeout > 0 {
		l.fileUnanswered(f)
	}
	l.armFlow(f)
}

// fileUnanswered notes a new flow in udpState.unanswered, first dropping
// the entries that no longer name an unanswered flow once they are as many
// as the flows themselves, so the list stays within twice the table.
func (l *loop) fileUnanswered(f *flow) {
	u := l.udp
	if len(u.unanswered) >= len(u.flows.items)+64 {
		keep := u.unanswered[:0]
		for _, r := range u.unanswered {
			if g := u.flows.at(r.slot); g != nil && g.live && g.gen == r.gen && g.replies == 0 {
				keep = append(keep, r)
			}
		}
		clear(u.unanswered[len(keep):])
		u.unanswered = keep
	}
	u.unanswered = append(u.unanswered, timerRef{slot: f.slot, gen: f.gen})
}

// evictUnanswered ends this loop's oldest flow of ln that has had no reply,
// and reports whether there was one.
func (l *loop) evictUnanswered(ln *Listener) bool {
	u := l.udp
	// Entries that no longer name an unanswered flow never will again (a
	// reused slot has a new generation): drop them from the front for
	// good, so that a full table of answered flows costs nothing here.
	for len(u.unanswered) > 0 {
		r := u.unanswered[0]
		if g := u.flows.at(r.slot); g != nil && g.live && g.gen == r.gen && g.replies == 0 {
			break
		}
		u.unanswered = u.unanswered[1:]
	}
	for i, r := range u.unanswered {
		g := u.flows.at(r.slot)
		// A flow with datagrams of the batch being read still queued is
		// new in this very batch: evicting it would free it under them.
		if g == nil || !g.live || g.gen != r.gen || g.replies > 0 || g.ln != ln || g.pendFirst >= 0 {
			continue
		}
		if i == 0 {
			u.unanswered = u.unanswered[1:] // the usual case: no shifting
		} else {
			u.unanswered = append(u.unanswered[:i], u.unanswered[i+1:]...)
		}
		ln.udpStats[l.id].Dropped[DropEvicted].Add(1)
		l.closeFlow(g)
		return true
	}
	return false
}

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
	f.timerTick = l.wheel.add(timerRef{slot: -1 - f.slot, gen: f.gen}, l.now+spareFlowIdle)
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

// dropFlowSocket closes the socket of a flow that is not live and frees
// the flow.
func (l *loop) dropFlowSocket(f *flow) {
	rawClose(f.fd)
	f.fd = -1
	l.freeFlow(f)
}

func localOr(a, b netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return b
}

// udpProxyHeader renders the PROXY v2 header for a UDP flow (DGRAM
// transport), once per flow.
func udpProxyHeader(client, local netip.AddrPort) []byte {
	src, dst := client.Addr().Unmap(), local.Addr().Unmap()
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UDPv4}
	if !src.Is4() || !dst.Is4() {
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
		h.TransportProtocol = proxyproto.UDPv6
	}
	h.SourceAddr = &net.UDPAddr{IP: src.AsSlice(), Port: int(client.Port())}
	h.DestinationAddr = &net.UDPAddr{IP: dst.AsSlice(), Port: int(local.Port())}
	b, err := h.Format()
	if err != nil {
		return nil
	}
	return b
}

// dialUDP opens a UDP socket connected to the backend.
func (l *loop) dialUDP(to netip.AddrPort) (int, error) {
	sa := sockaddrFrom(to)
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(sa.family()), unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(r)
	if err := rawConnect(fd, &sa); err != nil {
		rawClose(fd)
		return -1, err
	}
	return fd, nil
}

func (l *loop) allocFlow() *flow {
	u := l.udp
	var f *flow
	f = u.flows.alloc(func(slot int32, gen uint32) *flow { return &flow{slot: slot, gen: gen} })
	f.gen = (f.gen + 1) & genMask
	f.live = true
	return f
}

func (l *loop) freeFlow(f *flow) {
	f.live, f.spare = false, false
	f.pendFirst, f.pendLast = -1, -1
	f.gen = (f.gen + 1) & genMask
	f.ln, f.cfg, f.backend, f.header = nil, nil, nil, nil
	l.udp.flows.release(f.slot, func(f *flow) bool { return !f.live && !f.spare })
}

// closeFlow ends a flow: its socket closes, and its counts drop.
func (l *loop) closeFlow(f *flow) {
	if !f.live {
		return
	}
	l.endFlow(f)
	l.dropFlowSocket(f)
}

// endFlow takes a live flow out of the table and its counts.
func (l *loop) endFlow(f *flow) {
	u := l.udp
	delete(u.byKey, flowKey{f.ln, f.client, f.local})
	if n := len(u.byKey); u.byKeyPeak > minShrink && n < u.byKeyPeak/4 {
		// Go maps never give back their buckets: after a flood, a copy
		// of what is left returns the memory.
		m := make(map[flowKey]int32, n)
		for k, v := range u.byKey {
			m[k] = v
		}
		u.byKey, u.byKeyPeak = m, n
	}
	f.ln.active.Add(-1)
	f.backend.Active.Add(-1)
	f.live = false
	f.ln, f.cfg, f.backend, f.header = nil, nil, nil, nil
}

// flowRefused handles ICMP port unreachable from a flow's backend: a
// passive failure, and the flow ends.
func (l *loop) flowRefused(f *flow) {
	f.backend.Stats(l.id).ConnectErrors.Add(1)
	f.cfg.Pool.ConnectFailed(f.backend)
	l.closeFlow(f)
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
			u.moreReplies = append(u.moreReplies, timerRef{slot: f.slot, gen: f.gen})
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

// minShrink is the least peak worth copying a flow table down from.
const minShrink = 4096

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

func (l *loop) armFlow(f *flow) {
	due := f.due()
	if due == 0 || f.timerTick >= 0 {
		return
	}
	f.timerTick = l.wheel.add(timerRef{slot: -1 - f.slot, gen: f.gen}, due)
}

// due is when f ends unless something happens: IdleTimeout after its last
// datagram either way, or, while it has had no reply, UDPReplyTimeout
// after it began, whichever comes first; 0 for never.
func (f *flow) due() int64 {
	var due int64
	if f.cfg.IdleTimeout > 0 {
		due = f.lastSeen + int64(f.cfg.IdleTimeout)
	}
	if f.replies == 0 && f.cfg.UDPReplyTimeout > 0 {
		if r := f.start + int64(f.cfg.UDPReplyTimeout); due == 0 || r < due {
			due = r
		}
	}
	return due
}

func (l *loop) fireFlowTimer(ref timerRef, tick int64) {
	f := l.udp.flows.at(-1 - ref.slot)
	if f == nil {
		return // cut off with the top of the table
	}
	if f.spare && f.gen == ref.gen && f.timerTick == tick {
		f.timerTick = -1
		l.closeSpare(f)
		return
	}
	if !f.live || f.gen != ref.gen || f.timerTick != tick {
		return
	}
	f.timerTick = -1
	due := f.due()
	if due == 0 {
		return
	}
	if due > l.now {
		f.timerTick = l.wheel.add(ref, due)
		return
	}
	l.closeFlow(f)
}

// closeListenerFlows ends the flows of a listener that this loop no longer
// serves.
func (l *loop) closeListenerFlows(ln *Listener) {
	if l.udp == nil {
		return
	}
	if l.udp.outLn == ln {
		l.udpFlush()
	}
	for _, f := range l.udp.flows.items {
		if f.live && f.ln == ln {
			l.closeFlow(f)
		}
	}
}

// closeBackendFlows ends every flow to b (disable).
func (l *loop) closeBackendFlows(b *pool.Backend) {
	if l.udp == nil {
		return
	}
	l.udpFlush()
	for _, f := range l.udp.flows.items {
		if f.live && f.backend == b {
			l.closeFlow(f)
		}
	}
	l.closeSpares(b.Addr)
}

// closeSpares closes the spare sockets connected to addr.
func (l *loop) closeSpares(addr netip.AddrPort) {
	for len(l.udp.spare[addr]) > 0 {
		l.closeSpare(l.udp.spare[addr][0])
	}
}

func (l *loop) closeAllFlows() {
	if l.udp == nil {
		return
	}
	l.udpFlush()
	for _, f := range l.udp.flows.items {
		l.closeFlow(f)
	}
	for addr := range l.udp.spare {
		l.closeSpares(addr)
	}
}
