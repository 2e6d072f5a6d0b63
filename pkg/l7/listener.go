package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/lbd-lb/lbd/internal/netset"
)

// Listener is a running http listener: its socket, the Server on it, and,
// with TLS, the certificate a reload can replace.
//
// The socket outlives the server: when a change needs a new server
// (NeedsSuccessor: timeouts, size limits, max_connections, TLS on or off,
// accept_proxy_protocol), a successor takes the socket over and the old
// one finishes its requests in flight, so no connection is refused.
type Listener struct {
	log  *slog.Logger
	sock *socket
	// srv, gen and cfg are the serving server, its turn on the socket and
	// the Config it was made or last updated with.
	srv  *Server
	gen  *serving
	cfg  Config
	cert *atomic.Pointer[tls.Certificate] // nil without TLS
	// proxyRejected counts connections closed for a PROXY header from an
	// untrusted source.
	proxyRejected atomic.Uint64

	mu sync.Mutex
	// retired are the servers this listener's changes replaced that still
	// serve long-lived connections; retiring counts their handovers.
	retired  map[*Server]struct{}
	retiring sync.WaitGroup
}

// Listen binds bind and serves cfg on it.
func Listen(bind netip.AddrPort, cfg Config, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.Default()
	}
	srv, err := New(cfg, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", bind.String())
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
	}
	l := &Listener{log: log, sock: newSocket(ln), retired: map[*Server]struct{}{}}
	l.gen = l.serve(srv, cfg)
	return l, nil
}

// NeedsSuccessor reports whether going from a to b takes a new Server on
// the socket rather than an Update: whether they differ in what a Server
// fixes when it is made, or in what sits in front of it on the socket
// (TLS on or off, the PROXY header and whom it is taken from).
func NeedsSuccessor(a, b Config) bool {
	return !sameLimits(a, b) || (a.Cert == nil) != (b.Cert == nil) ||
		a.AcceptProxyProtocol != b.AcceptProxyProtocol ||
		(b.AcceptProxyProtocol && !slices.Equal(a.TrustedProxies, b.TrustedProxies))
}

// Change is a checked change of a Listener's Config, ready to Apply.
type Change struct {
	cfg Config
	// successor, when set, takes the socket over instead of an Update.
	successor *Server
}

// Prepare checks cfg and makes what applying it takes, serving nothing:
// a successor Server when cfg needs one. A Change that is not applied
// holds nothing that needs releasing.
func (l *Listener) Prepare(cfg Config) (*Change, error) {
	ch := &Change{cfg: cfg}
	var err error
	if NeedsSuccessor(l.cfg, cfg) {
		ch.successor, err = l.srv.Successor(cfg)
	} else {
		_, err = New(cfg, l.log) // validates, serves nothing
	}
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// Apply makes a prepared change; nothing fails from here. A server that a
// successor replaces stops accepting and finishes its requests in flight
// within drain, in the background.
func (l *Listener) Apply(ch *Change, drain time.Duration) {
	if ch.successor == nil {
		if err := l.srv.Update(ch.cfg); err != nil {
			l.log.Error("http listener update", "listener", ch.cfg.Name, "err", err) // validated by Prepare
		}
		if ch.cfg.Cert != nil {
			l.cert.Store(ch.cfg.Cert)
		}
		l.cfg = ch.cfg
		return
	}
	l.log.Info("http listener limits changed: a new server takes the socket over", "listener", ch.cfg.Name, "bind", l.Addr())
	l.handover(ch.successor, ch.cfg, drain)
}

// handover moves the socket to srv, built for cfg: the new server accepts
// from now on, and the old one stops accepting and finishes its requests
// in flight within drain, in the background.
func (l *Listener) handover(srv *Server, cfg Config, drain time.Duration) {
	oldSrv, oldGen := l.srv, l.gen
	l.gen = l.serve(srv, cfg)
	oldGen.tap.Close()
	srv.Inherit(oldSrv)
	l.mu.Lock()
	l.retired[oldSrv] = struct{}{}
	l.mu.Unlock()
	l.retiring.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		oldSrv.Retire(ctx)
		cancel()
		<-oldGen.done
		// Its long-lived connections go on until they end; then whatever
		// it still holds (backend connections released since) is closed.
		oldSrv.Wait(context.Background())
		l.mu.Lock()
		delete(l.retired, oldSrv)
		l.mu.Unlock()
		done, stop := context.WithCancel(context.Background())
		stop()
		oldSrv.Shutdown(done)
	})
}

// serve starts srv on a new tap of the socket, with the PROXY protocol and
// TLS layers cfg asks for, and makes it the listener's server.
func (l *Listener) serve(srv *Server, cfg Config) *serving {
	g := &serving{tap: l.sock.tap(), done: make(chan struct{})}
	var ln net.Listener = g.tap
	if cfg.AcceptProxyProtocol {
		// The PROXY header comes first, before TLS: only from the trusted
		// proxies, within a deadline; anything else closes that
		// connection alone. The header's source becomes the client.
		trusted := netset.Set(cfg.TrustedProxies)
		ln = &proxyproto.Listener{
			Listener:          ln,
			ReadHeaderTimeout: 5 * time.Second,
			ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				if a, ok := o.Upstream.(*net.TCPAddr); ok {
					if ip, _ := netip.AddrFromSlice(a.IP); trusted.Contains(ip) {
						return proxyproto.REQUIRE, nil
					}
				}
				// Closes this connection; the listener goes on.
				l.proxyRejected.Add(1)
				return proxyproto.REJECT, proxyproto.ErrInvalidUpstream
			},
		}
	}
	l.cert = nil
	if cfg.Cert != nil {
		certs := new(atomic.Pointer[tls.Certificate])
		certs.Store(cfg.Cert)
		l.cert = certs
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12,
			// HTTP/1.1 only: this listener does not speak h2.
			NextProtos:     []string{"http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certs.Load(), nil },
		})
	}
	l.srv, l.cfg = srv, cfg
	go func() {
		defer close(g.done)
		if err := srv.Serve(ln); err != nil {
			l.log.Error("http listener stopped", "listener", cfg.Name, "err", err)
		}
	}()
	return g
}

// Addr is the bound address.
func (l *Listener) Addr() string { return l.sock.ln.Addr().String() }

// Server is the server now on the socket.
func (l *Listener) Server() *Server { return l.srv }

// Accepted counts the connections accepted on the socket.
func (l *Listener) Accepted() uint64 { return l.sock.accepted.Load() }

// ProxyRejected counts the connections closed for a PROXY header from an
// untrusted source.
func (l *Listener) ProxyRejected() uint64 { return l.proxyRejected.Load() }

// Stop closes the socket and shuts the listener's servers down, the one
// serving and those it replaced, letting requests in flight finish until
// ctx ends.
func (l *Listener) Stop(ctx context.Context) {
	l.sock.close()
	l.srv.Shutdown(ctx)
	select {
	case <-l.gen.done:
	case <-ctx.Done():
	}
	l.mu.Lock()
	olds := make([]*Server, 0, len(l.retired))
	for srv := range l.retired {
		olds = append(olds, srv)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range olds {
		wg.Go(func() { srv.Shutdown(ctx) })
	}
	wg.Wait()
	l.retiring.Wait()
}

// serving is one l7 server's turn on the socket: its tap and the end of
// its Serve.
type serving struct {
	tap  *tap
	done chan struct{}
}

// socket is an http listener's TCP socket. One goroutine accepts on it and
// hands each connection to whichever tap is open.
type socket struct {
	ln    net.Listener
	conns chan accepted
	// back holds connections a closing tap took but did not serve; the
	// next tap serves them first.
	back   chan accepted
	closed chan struct{}
	once   sync.Once
	// accepted counts the connections accepted on the socket.
	accepted atomic.Uint64
}

type accepted struct {
	c   net.Conn
	err error
}

func newSocket(ln net.Listener) *socket {
	s := &socket{ln: ln, conns: make(chan accepted), back: make(chan accepted, 64), closed: make(chan struct{})}
	go s.acceptLoop()
	return s
}

func (s *socket) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			s.accepted.Add(1)
		}
		select {
		case s.conns <- accepted{c, err}:
		case <-s.closed:
			if c != nil {
				c.Close()
			}
			return
		}
	}
}

// close closes the socket: nothing is accepted any more.
func (s *socket) close() {
	s.once.Do(func() {
		close(s.closed)
		s.ln.Close()
	})
	for {
		select {
		case a := <-s.back:
			if a.c != nil {
				a.c.Close()
			}
		default:
			return
		}
	}
}

// tap is one server's net.Listener on a socket. Closing it ends that
// server's Accept loop and leaves the socket open for the next tap.
type tap struct {
	s      *socket
	closed chan struct{}
	once   sync.Once
}

func (s *socket) tap() *tap { return &tap{s: s, closed: make(chan struct{})} }

func (t *tap) Accept() (net.Conn, error) {
	select {
	case <-t.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case a := <-t.s.back:
		return a.c, a.err
	default:
	}
	select {
	case a := <-t.s.back:
		return a.c, a.err
	case a := <-t.s.conns:
		select {
		case <-t.closed:
			// Taken just as this tap closed: the next one serves it.
			select {
			case t.s.back <- a:
			default:
				if a.c != nil {
					a.c.Close()
				}
			}
			return nil, net.ErrClosed
		default:
		}
		return a.c, a.err
	case <-t.closed:
		return nil, net.ErrClosed
	case <-t.s.closed:
		return nil, net.ErrClosed
	}
}

func (t *tap) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

func (t *tap) Addr() net.Addr { return t.s.ln.Addr() }
