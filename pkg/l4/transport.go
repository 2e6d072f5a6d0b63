package l4

import (
	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/pkg/pool"
)

// transport is what a loop does for one kind of listener: TCP, whose
// records are connections (conn.go), or UDP, whose records are flows
// (udp.go). The loop's own machinery (epoll, the timer wheel, commands,
// listeners joining and leaving) reaches them only through it.
type transport interface {
	// ready takes what a listening socket holds: new connections, or a
	// batch of datagrams.
	ready(l *loop, ll *loopListener)
	// event handles readiness of a socket of one of its records.
	event(l *loop, ev *unix.EpollEvent)
	// fire handles a timer of its records come due in tick.
	fire(l *loop, ref timerRef, tick int64)
	// leaving handles a listener whose socket is about to close: what it
	// holds is served, or ends if it cannot go on without the socket.
	leaving(l *loop, ll *loopListener)
	// backendGone ends every record to b.
	backendGone(l *loop, b *pool.Backend)
	// closeAll ends every record: the loop stops.
	closeAll(l *loop)
}

// The transports, by timerRef.kind and loopListener.kind.
const (
	kindTCP = iota
	kindUDP
)

var transports = [...]transport{kindTCP: tcpTransport{}, kindUDP: udpTransport{}}

type tcpTransport struct{}

func (tcpTransport) ready(l *loop, ll *loopListener)        { l.accept(ll) }
func (tcpTransport) event(l *loop, ev *unix.EpollEvent)     { l.connEvent(ev) }
func (tcpTransport) fire(l *loop, ref timerRef, tick int64) { l.fireConnTimer(ref, tick) }
func (tcpTransport) leaving(l *loop, ll *loopListener)      { l.acceptQueued(ll) }
func (tcpTransport) backendGone(l *loop, b *pool.Backend)   { l.closeBackendConns(b) }

func (tcpTransport) closeAll(l *loop) {
	for _, c := range l.conns.items {
		if c != nil {
			l.closeConn(c, false)
		}
	}
}

type udpTransport struct{}

func (udpTransport) ready(l *loop, ll *loopListener) { l.udpRecv(ll) }

func (udpTransport) event(l *loop, ev *unix.EpollEvent) {
	if l.udp == nil {
		return
	}
	if f := l.udp.flows.at(ev.Fd); f != nil && f.live && f.gen == uint32(ev.Pad)>>tagBits {
		l.udpReplies(f)
	}
}

func (udpTransport) fire(l *loop, ref timerRef, tick int64) { l.fireFlowTimer(ref, tick) }

// leaving ends the listener's flows: they answer through its socket, and
// without it they are dead.
func (udpTransport) leaving(l *loop, ll *loopListener)    { l.closeListenerFlows(ll.ln) }
func (udpTransport) backendGone(l *loop, b *pool.Backend) { l.closeBackendFlows(b) }
func (udpTransport) closeAll(l *loop)                     { l.closeAllFlows() }
