package l4

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

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
	// life numbers the flow among this loop's flows. A spare socket's
	// record becomes the next flow with its generation unchanged (its
	// epoll registration carries it), so what must tell one flow from
	// the next, the unanswered list, names a flow by its life.
	life   uint32
	header []byte // PROXY v2 header prepended to every datagram, or nil
	dst    sockaddr
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

// flowRef names one flow: its slot and its life.
type flowRef struct {
	slot int32
	life uint32
}

// stillUnanswered is the live flow r names if it has had no reply yet, or
// nil.
func (u *udpState) stillUnanswered(r flowRef) *flow {
	if g := u.flows.at(r.slot); g != nil && g.live && g.life == r.life && g.replies == 0 {
		return g
	}
	return nil
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
	unanswered []flowRef
	// lives counts the flows started, for flow.life.
	lives uint32
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
	l.udp.lives++
	f.life = l.udp.lives
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
		keep := u.sweepUnanswered(u.unanswered[:0])
		clear(u.unanswered[len(keep):])
		u.unanswered = keep
	}
	u.unanswered = append(u.unanswered, flowRef{slot: f.slot, life: f.life})
}

// sweepUnanswered appends to keep, in order, the entries of the
// unanswered list that still name an unanswered flow.
func (u *udpState) sweepUnanswered(keep []flowRef) []flowRef {
	for _, r := range u.unanswered {
		if u.stillUnanswered(r) != nil {
			keep = append(keep, r)
		}
	}
	return keep
}

// evictUnanswered ends this loop's oldest flow of ln that has had no reply,
// and reports whether there was one.
func (l *loop) evictUnanswered(ln *Listener) bool {
	u := l.udp
	// Entries that no longer name an unanswered flow never will again
	// (each flow has a life of its own): drop them from the front for
	// good, so that a full table of answered flows costs nothing here.
	for len(u.unanswered) > 0 {
		r := u.unanswered[0]
		if u.stillUnanswered(r) != nil {
			break
		}
		u.unanswered = u.unanswered[1:]
	}
	for i, r := range u.unanswered {
		g := u.stillUnanswered(r)
		// A flow with datagrams of the batch being read still queued is
		// new in this very batch: evicting it would free it under them.
		if g == nil || g.ln != ln || g.pendFirst >= 0 {
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
	u := l.udp
	n := len(u.flows.items)
	u.flows.release(f.slot, func(f *flow) bool { return !f.live && !f.spare }, func(f *flow) uint32 { return f.gen })
	if len(u.flows.items) < n {
		// The table was cut after a flood: the list of unanswered flows,
		// which the flood grew as much, goes down with it.
		u.unanswered = u.sweepUnanswered(nil)
	}
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
	if n := len(u.byKey); u.byKeyPeak > minTable && n < u.byKeyPeak/4 {
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

func (l *loop) armFlow(f *flow) {
	due := f.due()
	if due == 0 || f.timerTick >= 0 {
		return
	}
	f.timerTick = l.wheel.add(timerRef{kind: kindUDP, slot: f.slot, gen: f.gen}, due)
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
	f := l.udp.flows.at(ref.slot)
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
