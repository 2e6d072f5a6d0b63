package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l7"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// httpListener is a running http listener: its socket, the l7 server on
// it, and, with TLS, the certificate a reload can replace.
type httpListener struct {
	name string
	bind netip.AddrPort
	ln   net.Listener
	srv  *l7.Server
	cert *atomic.Pointer[tls.Certificate] // nil without TLS
	done chan struct{}
}

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
	c := l7.Config{
		Name:           lc.Name,
		TrustedProxies: lc.TrustedProxies,
		IdleTimeout:    lc.IdleTimeout,
		ConnectTimeout: lc.ConnectTimeout,
		Retries:        lc.Retries,
		LoopBase:       s.engine.Loops(),
		MaxConnections: lc.MaxConnections,
	}
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
	ln, err := net.Listen("tcp", lc.Bind.String())
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", lc.Name, err)
	}
	h := &httpListener{name: lc.Name, bind: lc.Bind, ln: ln, srv: srv, done: make(chan struct{})}
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
				return proxyproto.REJECT, proxyproto.ErrInvalidUpstream
			},
		}
	}
	if lc.TLSCertFile != "" {
		cert, err := loadCert(lc)
		if err != nil {
			ln.Close()
			return nil, err
		}
		h.cert = new(atomic.Pointer[tls.Certificate])
		h.cert.Store(cert)
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12,
			// HTTP/1.1 only: this listener does not speak h2.
			NextProtos:     []string{"http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return h.cert.Load(), nil },
		})
	}
	go func() {
		defer close(h.done)
		if err := srv.Serve(ln); err != nil {
			s.log.Error("http listener stopped", "listener", lc.Name, "err", err)
		}
	}()
	return h, nil
}

// addr is the bound address.
func (h *httpListener) addr() string { return h.ln.Addr().String() }

// stop shuts the listener down, letting requests in flight finish until
// ctx ends.
func (h *httpListener) stop(ctx context.Context) {
	h.srv.Shutdown(ctx)
	select {
	case <-h.done:
	case <-ctx.Done():
	}
}

// errTLSChange refuses a reload that turns TLS on or off on a listener
// that keeps its bind: its socket cannot change in place.
var errTLSChange = errors.New("turning TLS on or off needs a new bind address or a restart")

// shutdownHTTP stops every http listener within ctx.
func (s *Server) shutdownHTTPLocked(ctx context.Context) {
	for name, h := range s.http {
		h.stop(ctx)
		delete(s.http, name)
	}
}
