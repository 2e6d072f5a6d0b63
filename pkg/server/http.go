package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"sync"

	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l7"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/target"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// httpListener is a running http listener, with its name and the bind it
// was opened on: a reload matches listeners by bind.
type httpListener struct {
	*l7.Listener
	name string
	bind netip.AddrPort
}

// startHTTP opens an http listener for lc, serving c.
func (s *Server) startHTTP(lc config.Listener, c l7.Config) (*httpListener, error) {
	ln, err := l7.Listen(lc.Bind, c, s.log)
	if err != nil {
		return nil, err
	}
	return &httpListener{Listener: ln, name: lc.Name, bind: lc.Bind}, nil
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

// l7Config turns an http listener's config into the l7 server's, reading
// its certificate.
func (s *Server) l7Config(lc config.Listener, pools map[string]*pool.Pool, verifiers map[string]*auth.Verifier) (l7.Config, error) {
	c := l7.Config{
		Name: lc.Name, TrustedProxies: lc.TrustedProxies, AcceptProxyProtocol: lc.AcceptProxyProtocol,
		HeaderTimeout: lc.HeaderTimeout, ReadTimeout: lc.ReadTimeout, WriteTimeout: lc.WriteTimeout,
		TunnelTimeout: lc.TunnelTimeout, IdleTimeout: lc.IdleTimeout, MaxHeaderBytes: lc.MaxHeaderBytes, MaxBodyBytes: lc.MaxBodyBytes,
		MaxConnections: lc.MaxConnections, ConnectTimeout: lc.ConnectTimeout, Retries: lc.Retries,
	}
	if lc.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(lc.TLSCertFile, lc.TLSKeyFile)
		if err != nil {
			return c, fmt.Errorf("listener %q: %w", lc.Name, err)
		}
		c.Cert = &cert
	}
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
	atOnce(list, func(h *httpListener) { h.Stop(ctx) })
}

// atOnce runs f on every item side by side and waits for them all.
func atOnce[T any](items []T, f func(T)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Go(func() { f(it) })
	}
	wg.Wait()
}
