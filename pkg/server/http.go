package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l7"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/target"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// httpListener is a running http listener: its socket, the l7 server on
// it, and, with TLS, the certificate a reload can replace.
//
// The socket outlives the server: when a reload changes what an l7 server
// fixes when it is made (timeouts, size limits, max_connections, TLS on or
// off, accept_proxy_protocol), a successor server takes the socket over
// (see handover) and the old one finishes its requests in flight, so no
// connection is refused.
type httpListener struct {
	name string
	bind netip.AddrPort
	sock *socket
	srv  *l7.Server
	gen  *serving
	// lc is the config the serving chain was built from.
	lc   config.Listener
	cert *atomic.Pointer[tls.Certificate] // nil without TLS
	// proxyRejected counts connections closed for a PROXY header from an
	// untrusted source.
	proxyRejected atomic.Uint64
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

// buildVerifiers loads every [[auth]] block: keys are read here, at start
// and on each reload.
func buildVerifiers(cfg *config.Config) (map[string]*auth.Verifier, error) {
	out := map[string]*auth.Verifier{}
	for _, a := range cfg.Auths {
		v, err := auth.New(auth.Config{
			Name: a.Name, Algorithms: a.Algorithms, JWKSFile: a.JWKSFile, HMACSecretFile: a.HMACSecretFile,
			Issuer: a.Issuer, Audience: a.Audience, Leeway: a.Leeway, ForwardClaims: a.ForwardClaims,
		})
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", cfg.File, a.Line, err)
		}
		out[a.Name] = v
	}
	return out, nil
}

// routeName labels a route in metrics: its host and path prefix, made
// unique with its position when two routes share them.
func routeName(r config.Route, i int, seen map[string]bool) string {
	name := r.Host + r.PathPrefix
	if name == "" {
		name = "*"
	}
	if seen[name] {
		name = fmt.Sprintf("%s#%d", name, i+1)
	}
	seen[name] = true
	return name
}

// l7Config turns an http listener's config into the l7 server's.
func (s *Server) l7Config(lc config.Listener, pools map[string]*pool.Pool, verifiers map[string]*auth.Verifier) (l7.Config, error) {
	c := limits(lc)
	c.Name, c.TrustedProxies, c.Retries = lc.Name, lc.TrustedProxies, lc.Retries
	mode, err := target.ParseMode(lc.PathNormalization)
	if err != nil {
		return c, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	c.PathNormalization, c.StripHeaders, c.SourcePrefixV6 = mode, lc.StripHeaders, lc.SourcePrefixV6
	if lc.AccessLog {
		c.AccessLog = s.log.With("log", "access")
	}
	seen := map[string]bool{}
	for i, r := range lc.Routes {
		name := routeName(r, i, seen)
		lr := l7.Route{Name: name, Spec: r.Spec(name), Pool: pools[r.Pool]}
		if r.Auth != "" {
			lr.Auth = verifiers[r.Auth]
		}
		if rl := r.RateLimit; rl != nil {
			key, err := ratelimit.ParseKey(rl.Key)
			if err != nil {
				return c, fmt.Errorf("listener %q route %d: %w", lc.Name, i+1, err)
			}
			lr.Limit = ratelimit.New(rl.Rate, rl.Burst)
			lr.LimitKey = key
		}
		c.Routes = append(c.Routes, lr)
	}
	return c, nil
}

func loadCert(lc config.Listener) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(lc.TLSCertFile, lc.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	return &cert, nil
}

// startHTTP opens an http listener and serves it.
func (s *Server) startHTTP(lc config.Listener, c l7.Config) (*httpListener, error) {
	srv, err := l7.New(c, s.log)
	if err != nil {
		return nil, err
	}
	var cert *tls.Certificate
	if lc.TLSCertFile != "" {
		if cert, err = loadCert(lc); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", lc.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	h := &httpListener{name: lc.Name, bind: lc.Bind, sock: newSocket(ln)}
	h.gen = s.serve(h, lc, srv, cert)
	return h, nil
}

// serve starts srv on a new tap of h's socket, with the PROXY protocol
// and TLS layers lc asks for, and makes it h's server. cert is the
// certificate for a TLS listener.
func (s *Server) serve(h *httpListener, lc config.Listener, srv *l7.Server, cert *tls.Certificate) *serving {
	g := &serving{tap: h.sock.tap(), done: make(chan struct{})}
	var ln net.Listener = g.tap
	if lc.AcceptProxyProtocol {
		// The PROXY header comes first, before TLS: only from the trusted
		// proxies, within a deadline; anything else closes that
		// connection alone. The header's source becomes the client.
		trustedNets := lc.TrustedProxies
		ln = &proxyproto.Listener{
			Listener:          ln,
			ReadHeaderTimeout: 5 * time.Second,
			ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				if a, ok := o.Upstream.(*net.TCPAddr); ok {
					ip, _ := netip.AddrFromSlice(a.IP)
					for _, p := range trustedNets {
						if p.Contains(ip.Unmap()) {
							return proxyproto.REQUIRE, nil
						}
					}
				}
				// Closes this connection; the listener goes on.
				h.proxyRejected.Add(1)
				return proxyproto.REJECT, proxyproto.ErrInvalidUpstream
			},
		}
	}
	h.cert = nil
	if cert != nil {
		certs := new(atomic.Pointer[tls.Certificate])
		certs.Store(cert)
		h.cert = certs
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12,
			// HTTP/1.1 only: this listener does not speak h2.
			NextProtos:     []string{"http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certs.Load(), nil },
		})
	}
	h.srv, h.lc = srv, lc
	go func() {
		defer close(g.done)
		if err := srv.Serve(ln); err != nil {
			s.log.Error("http listener stopped", "listener", lc.Name, "err", err)
		}
	}()
	return g
}

// limits is the part of an l7 config that l7.SameLimits compares: what an
// l7 server fixes when it is made.
func limits(lc config.Listener) l7.Config {
	return l7.Config{
		HeaderTimeout: lc.HeaderTimeout, ReadTimeout: lc.ReadTimeout, WriteTimeout: lc.WriteTimeout,
		TunnelTimeout: lc.TunnelTimeout, IdleTimeout: lc.IdleTimeout, MaxHeaderBytes: lc.MaxHeaderBytes, MaxBodyBytes: lc.MaxBodyBytes,
		MaxConnections: lc.MaxConnections, ConnectTimeout: lc.ConnectTimeout,
	}
}

// needsSuccessor reports whether going from h's config to lc takes a new
// l7 server on the socket rather than an Update.
func (h *httpListener) needsSuccessor(lc config.Listener) bool {
	return !l7.SameLimits(limits(h.lc), limits(lc)) || (h.lc.TLSCertFile != "") != (lc.TLSCertFile != "") ||
		h.lc.AcceptProxyProtocol != lc.AcceptProxyProtocol ||
		(lc.AcceptProxyProtocol && !slices.Equal(h.lc.TrustedProxies, lc.TrustedProxies))
}

// handover moves h's socket to srv, built for lc: the new server accepts
// from now on, and the old one stops accepting and finishes its requests
// in flight within timeout, in the background.
func (s *Server) handover(h *httpListener, lc config.Listener, srv *l7.Server, cert *tls.Certificate, timeout time.Duration) {
	oldSrv, oldGen := h.srv, h.gen
	h.gen = s.serve(h, lc, srv, cert)
	oldGen.tap.Close()
	srv.Inherit(oldSrv)
	// s.mu is held (apply).
	s.retiring.Add(1)
	s.retired[oldSrv] = struct{}{}
	go func() {
		defer s.retiring.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		oldSrv.Retire(ctx)
		cancel()
		<-oldGen.done
		// Its long-lived connections go on until they end; then whatever
		// it still holds (backend connections released since) is closed.
		oldSrv.Wait(context.Background())
		s.mu.Lock()
		delete(s.retired, oldSrv)
		s.mu.Unlock()
		done, stop := context.WithCancel(context.Background())
		stop()
		oldSrv.Shutdown(done)
	}()
}

// stopRetired shuts down, within ctx, the servers reloads have retired that
// still serve long-lived connections, and waits for their handovers.
func (s *Server) stopRetired(ctx context.Context) {
	s.mu.Lock()
	olds := make([]*l7.Server, 0, len(s.retired))
	for srv := range s.retired {
		olds = append(olds, srv)
	}
	s.mu.Unlock()
	atOnce(olds, func(srv *l7.Server) { srv.Shutdown(ctx) })
	s.retiring.Wait()
}

// addr is the bound address.
func (h *httpListener) addr() string { return h.sock.ln.Addr().String() }

// stop shuts the listener down, letting requests in flight finish until
// ctx ends, and closes its socket.
func (h *httpListener) stop(ctx context.Context) {
	h.sock.close()
	h.srv.Shutdown(ctx)
	select {
	case <-h.gen.done:
	case <-ctx.Done():
	}
}

// takeHTTPLocked removes every http listener from s, for stopHTTP.
func (s *Server) takeHTTPLocked() map[string]*httpListener {
	hs := s.http
	s.http = map[string]*httpListener{}
	return hs
}

// stopHTTP stops the http listeners hs within ctx, side by side, so that
// one listener's long drain (an event stream, a WebSocket) does not use up
// the others' time.
func stopHTTP(ctx context.Context, hs map[string]*httpListener) {
	list := make([]*httpListener, 0, len(hs))
	for _, h := range hs {
		list = append(list, h)
	}
	atOnce(list, func(h *httpListener) { h.stop(ctx) })
}

// atOnce runs f on every item side by side and waits for them all.
func atOnce[T any](items []T, f func(T)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(it)
		}()
	}
	wg.Wait()
}

// shutdownHTTPLocked stops every http listener within ctx.
func (s *Server) shutdownHTTPLocked(ctx context.Context) {
	stopHTTP(ctx, s.takeHTTPLocked())
}
