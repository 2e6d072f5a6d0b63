package healthcheck

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Prober runs one probe against an address. Probe returns nil when the
// target is healthy; its error becomes the reason of a down Event. It must
// return once ctx is done (its deadline is the Config.Timeout of the probe,
// and Checker.Close cancels it). A Checker calls Probe from many goroutines
// at once, never twice at once for the same target.
type Prober interface {
	Probe(ctx context.Context, addr netip.AddrPort) error
}

// ProberFunc adapts a function to a Prober, for example to script health
// in the tests of a Checker's owner.
type ProberFunc func(ctx context.Context, addr netip.AddrPort) error

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context, addr netip.AddrPort) error { return f(ctx, addr) }

// newProber builds the Prober of a Config with defaults applied. A Config
// that does not validate gets a Prober that always fails with the reason;
// TypeNone gets nil, as a Checker never probes then.
func newProber(cfg Config) Prober {
	if err := cfg.Validate(); err != nil {
		return ProberFunc(func(context.Context, netip.AddrPort) error { return err })
	}
	// No keepalive: a probe's connection lives for milliseconds, and
	// enabling keepalive would cost setsockopt calls on every probe.
	d := &net.Dialer{KeepAlive: -1}
	switch cfg.Type {
	case TypeTCP:
		return &tcpProber{dialer: d}
	case TypeHTTP:
		return &httpProber{
			dialer: d,
			path:   cfg.Path,
			host:   cfg.Host,
			min:    cfg.ExpectStatusMin,
			max:    cfg.ExpectStatusMax,
		}
	}
	return nil
}

// tcpProber succeeds when the three-way handshake completes in time.
type tcpProber struct {
	dialer *net.Dialer
}

func (p *tcpProber) Probe(ctx context.Context, addr netip.AddrPort) error {
	c, err := dial(ctx, p.dialer, addr)
	if err != nil {
		return err
	}
	closeReset(c)
	return nil
}

// dial connects to addr. It goes through DialContext rather than
// Dialer.DialTCP, which given no local address binds the socket to
// 0.0.0.0:0 first: one more system call per probe, and bind(2) reserves
// its port for all destinations, where connect(2) may reuse a port for
// different ones.
func dial(ctx context.Context, d *net.Dialer, addr netip.AddrPort) (*net.TCPConn, error) {
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// closeReset closes c with an RST instead of a FIN. The side that closes
// first keeps the connection in TIME_WAIT for a minute; at 1000 targets
// every 2s that would be some 30000 sockets held by the checker, and their
// ephemeral ports. An RST leaves nothing behind on either side, at the cost
// of the backend seeing a reset instead of an orderly close, which a
// health-check connection that sends nothing makes harmless (HAProxy closes
// its checks the same way). A failure to set the option or to close changes
// nothing to the verdict, so both are ignored.
func closeReset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// Bounds of what an http probe reads: the response head must fit in
// respHeadMax bytes, and at most respBodyMax bytes of the body are read
// before the connection is dropped. Health endpoints answer with a few
// hundred bytes; the bounds keep a misbehaving backend from making a probe
// costly.
const (
	respHeadMax = 8 << 10
	respBodyMax = 4 << 10
)

// respBufs holds the read buffers of http probes, so that 500 probes a
// second allocate nothing large.
var respBufs = sync.Pool{New: func() any { return new([respHeadMax]byte) }}

// httpProber sends a GET over a fresh connection and checks the status.
// It is a minimal HTTP/1.1 client over a net.TCPConn rather than
// net/http: a per-probe http.Transport would cost goroutines and
// allocations for features a probe does not use, and a shared one would
// keep connections alive, which a probe must not do.
type httpProber struct {
	dialer     *net.Dialer
	path, host string
	min, max   int
}

// aLongTimeAgo is a deadline in the past: setting it aborts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

func (p *httpProber) Probe(ctx context.Context, addr netip.AddrPort) error {
	c, err := dial(ctx, p.dialer, addr)
	if err != nil {
		return err
	}
	var serverClosed bool
	defer func() {
		// When the backend closed first, it holds the TIME_WAIT and a
		// plain close is orderly; otherwise see closeReset.
		if serverClosed {
			_ = c.Close()
		} else {
			closeReset(c)
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return err
		}
	}
	// Cancellation (Checker.Close) has no deadline of its own to rely on.
	defer context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })()

	buf := respBufs.Get().(*[respHeadMax]byte)
	defer respBufs.Put(buf)
	if _, err := c.Write(p.appendRequest(buf[:0], addr)); err != nil {
		return err
	}
	status, eof, err := readResponse(c, buf[:], respBodyMax)
	serverClosed = eof
	if err != nil {
		return err
	}
	if status < p.min || status > p.max {
		return &StatusError{Status: status, Min: p.min, Max: p.max}
	}
	return nil
}

// appendRequest appends the probe's request. Connection: close asks the
// backend to close after answering, which also makes it the side that
// keeps the TIME_WAIT.
func (p *httpProber) appendRequest(b []byte, addr netip.AddrPort) []byte {
	b = append(b, "GET "...)
	b = append(b, p.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if p.host != "" {
		b = append(b, p.host...)
	} else {
		b = addr.AppendTo(b)
	}
	return append(b, "\r\nUser-Agent: lbd-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n"...)
}
