// Package l7 is the HTTP layer-7 proxy of lbd: an HTTP/1.1 server on
// github.com/valyala/fasthttp (chosen over net/http by measurement)
// that routes each request (pkg/l7/route), verifies its bearer token
// (pkg/l7/auth), applies the route's rate limit (pkg/l7/ratelimit) and
// forwards it to a backend picked through the route's pool (pkg/pool).
//
// Every request goes through one fixed chain, built in one place (newChain):
//
//	framing → route → auth → rate limit → proxy
//
// The framing guard is not a routing decision: it refuses requests whose
// framing two HTTP parsers could read differently (request smuggling), and
// header names that are not tokens or that imitate a hop-by-hop or
// forwarding header with underscores, before any other stage looks at
// them, and closes the connection. Its scan of the raw header also records
// which hop-by-hop and X-Forwarded-* headers the request carries
// (headerSet), so that the proxy stage deletes only those.
//
// A WebSocket upgrade goes through the whole chain and is then tunnelled
// (upgrade.go); h2c gets 400 and other upgrades 501. Responses are
// buffered whole, except those to requests that accept text/event-stream,
// which stream, each piece flushed at once.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/internal/netset"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/route"
	"github.com/lbd-lb/lbd/pkg/l7/target"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// Errors returned, wrapped, by New and Update.
var (
	ErrConfig = errors.New("l7: bad config")
)

// Route is one [[listener.route]]: what it matches and where it leads.
type Route struct {
	Name string
	Spec route.Spec
	// Pool receives the route's requests. Handlers run on any goroutine:
	// they pick through the snapshots' own pickers (pool.Snapshot.Pick)
	// and count through the backends' shared counters
	// (pool.Backend.SharedStats), never through an event loop's.
	Pool *pool.Pool
	// Auth verifies bearer tokens; nil means no authentication.
	Auth *auth.Verifier
	// Limit is the route's rate limit; nil means none.
	Limit *ratelimit.Limiter
	// LimitKey names the bucket of a request. A header or claim key that
	// the request lacks falls back to the client IP (in a separate key
	// space), so leaving the header out never escapes the limit.
	LimitKey ratelimit.KeySource
}

// Config is an http listener's runtime configuration. Its limits have no
// defaults here: the caller passes them all (pkg/config defines an http
// listener's defaults), and New and Update refuse a limit left at zero.
type Config struct {
	Name   string
	Routes []Route
	// TrustedProxies are the peers whose X-Forwarded-* headers are kept
	// (and extended) rather than replaced, and, with AcceptProxyProtocol,
	// the only peers whose PROXY header is taken.
	TrustedProxies []netip.Prefix
	// AcceptProxyProtocol has a Listener read a PROXY header (v1 or v2)
	// first on each connection, before TLS; its source becomes the client.
	// A connection from elsewhere is closed.
	AcceptProxyProtocol bool
	// Cert is a Listener's TLS certificate; nil serves plain HTTP.
	Cert *tls.Certificate
	// HeaderTimeout bounds reading a request's line and header, from its
	// first byte (from the connection's start for the first request): a
	// slowloris client is cut there. ReadTimeout bounds reading a
	// request's body, once its header is in, and each wait for a backend's
	// next bytes. WriteTimeout bounds each write of a response or of a
	// request to a backend. IdleTimeout bounds the wait for the next
	// request on a keep-alive connection. TunnelTimeout closes an upgraded
	// connection with no bytes either way for that long.
	HeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout, TunnelTimeout time.Duration
	// MaxHeaderBytes bounds the request line and header (431 beyond it);
	// MaxBodyBytes bounds the request body (413 beyond it).
	MaxHeaderBytes, MaxBodyBytes int
	// ConnectTimeout bounds a connect to a backend.
	ConnectTimeout time.Duration
	// Retries is how many other backends a request may try after a
	// connect failure, whatever its method: it never left. Default 0.
	Retries int
	// Now is the clock for rate limits and auth; nil means time.Now.
	Now func() time.Time
	// MaxConnections caps the listener's open client connections; 0 is
	// unlimited.
	MaxConnections int
	// AccessLog, when not nil, receives one info record per request:
	// method, host, path, route, status, bytes, duration, backend and
	// client address.
	AccessLog *slog.Logger
	// PathNormalization is how request paths are normalised before they
	// are routed and forwarded (see package target); the zero value is
	// target.Strict.
	PathNormalization target.Mode
	// StripHeaders are headers removed from requests of peers outside
	// TrustedProxies, besides those always removed (X-Real-IP,
	// True-Client-IP, X-Original-URL, X-Rewrite-URL, Forwarded and every
	// X-Forwarded-* header lbd does not set itself), in canonical form.
	StripHeaders []string
	// SourcePrefixV6 is the prefix length, 1 to 128, by which IPv6 client
	// addresses share a client_ip rate-limit bucket.
	SourcePrefixV6 int
}

// Server is an http listener. It is safe for concurrent use.
type Server struct {
	log   *slog.Logger
	srv   *fasthttp.Server
	watch *watchdog
	state atomic.Pointer[state]
	stats *listenerStats

	clientsMu sync.Mutex
	clients   sync.Map // *pool.Backend → *fasthttp.HostClient
	uploads   sync.Map // *pool.Backend → *atomic.Int32, streamed uploads under way

	// rejectedBase counts the connections refused at MaxConnections by
	// the servers this one succeeded.
	rejectedBase atomic.Uint64

	// stopping is set by Shutdown and Retire: every answer from then on
	// closes its connection, so that none goes on under this server.
	stopping atomic.Bool

	pruner sync.Once
}

// pruneEvery is how often the rate-limit tables forget the keys whose
// buckets are full again, which gives back the memory of a flood.
const pruneEvery = time.Minute

// pruneLimits prunes the rate limits of the current routes at each tick,
// until stop.
func (s *Server) pruneLimits(stop <-chan struct{}, tick <-chan time.Time) {
	for {
		select {
		case <-stop:
			return
		case <-tick:
			st := s.state.Load()
			now := st.now()
			for i := range st.routes {
				if l := st.routes[i].Limit; l != nil {
					l.Prune(now)
				}
			}
		}
	}
}

// state is everything a reload replaces at once.
type state struct {
	cfg     Config
	table   *route.Table
	routes  []liveRoute
	trusted netset.Set
	now     func() time.Time
	chain   handler
	proxy   *proxyStage
	owner   *listenerStats
	// pathMode is cfg.PathNormalization.
	pathMode target.Mode
	// routeHeaders are the names of the headers some route matches on,
	// each of which a request may carry only once.
	routeHeaders []string
	// claimHeaders are the forward_claims headers of every route with
	// auth, removed from requests on the routes without.
	claimHeaders []auth.ForwardClaim
}

// maxRouteHeaders bounds the distinct header names the routes of one
// listener may match on.
const maxRouteHeaders = 64

// liveRoute is a Route with its counters.
type liveRoute struct {
	Route
	stats *routeStats
	// forwardBits are the headers of headerSet among the route's
	// forward_claims headers.
	forwardBits headerSet
}

// New validates cfg, compiles its routes and returns a Server ready to Serve.
//
// The timeouts, size limits and MaxConnections of a Server are fixed when
// it is made (Update keeps them); NeedsSuccessor tells when a new
// configuration needs a Successor instead.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	return newServer(cfg, log, newListenerStats())
}

// Successor returns a new Server for cfg that carries on s's counters, to
// take over s's socket when cfg changes what Update cannot.
func (s *Server) Successor(cfg Config) (*Server, error) {
	return newServer(cfg, s.log, s.stats)
}

// OpenConnections is the number of client connections open now, lingering
// ones included, tunnels not (fasthttp does not count hijacked ones:
// TestFasthttpShutdownLeavesHijacked).
func (s *Server) OpenConnections() int {
	return int(s.srv.GetOpenConnectionsCount()) + int(s.watch.lingering.Load())
}

// RejectedConnections counts the connections refused past MaxConnections
// (answered 503 and closed), by this server and those it succeeded.
func (s *Server) RejectedConnections() uint64 {
	return s.rejectedBase.Load() + uint64(s.srv.GetRejectedConnectionsCount())
}

// Inherit adds prev's refused connections to s's, once prev has stopped
// accepting and s has taken its place.
func (s *Server) Inherit(prev *Server) { s.rejectedBase.Add(prev.RejectedConnections()) }

// sameLimits reports whether a and b have the same timeouts, size limits
// and connection cap: whether Update can go from one to the other.
func sameLimits(a, b Config) bool {
	return a.HeaderTimeout == b.HeaderTimeout && a.ReadTimeout == b.ReadTimeout &&
		a.WriteTimeout == b.WriteTimeout && a.IdleTimeout == b.IdleTimeout && a.TunnelTimeout == b.TunnelTimeout &&
		a.MaxHeaderBytes == b.MaxHeaderBytes && a.MaxBodyBytes == b.MaxBodyBytes &&
		a.MaxConnections == b.MaxConnections && a.ConnectTimeout == b.ConnectTimeout
}

func newServer(cfg Config, log *slog.Logger, stats *listenerStats) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log, stats: stats}
	st, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	c := st.cfg
	s.watch = newWatchdog(c.HeaderTimeout, c.IdleTimeout, c.WriteTimeout, c.ReadTimeout, c.TunnelTimeout)
	s.srv = &fasthttp.Server{
		Handler:               s.serveHTTP,
		ErrorHandler:          s.parseError,
		Name:                  "",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		ReadBufferSize:        c.MaxHeaderBytes,
		// The header, idle and write timeouts are the watchdog's (see
		// watchdog.go), so fasthttp sets no deadline of its own. A request
		// with a body gets ReadTimeout for it from the end of its header
		// (bodyTimeout), which fasthttp passes to the connection as a read
		// deadline and the watchdog keeps (TestFasthttpHeaderReceivedDeadline).
		HeaderReceived: bodyTimeout(c.ReadTimeout),
		// Request bodies are streamed to the backend, never held whole,
		// and the handler runs on the header alone: with a limit of one
		// byte, fasthttp reads at most that much of a body before it
		// (the limit itself is enforced by framingStage and bodyReader;
		// TestFasthttpStreamsRequestBody).
		StreamRequestBody:  true,
		MaxRequestBodySize: 1,
		// Expect: 100-continue is answered once route, auth and rate
		// limit have passed, never before.
		ExpectHandler: s.expect,
		// RequestCtx.Time is not used: no clock read per request for it.
		LazyRequestTime: true,
		// Header names are normalised to their canonical case, and so are
		// the names given to Peek and Del. Left as the client sent them, a
		// lower-case x-forwarded-for, keep-alive or claim header would
		// escape every exact-name Del and reach the backend.
		DisableHeaderNamesNormalizing: false,
		DisablePreParseMultipartForm:  true,
		CloseOnShutdown:               true,
		SecureErrorLogMessage:         true,
		Logger:                        fasthttpLogger{log},
		// Past it, a new connection is answered 503 and closed.
		Concurrency: c.MaxConnections,
	}
	return s, nil
}

// bodyTimeout gives a request with a body d to read it, from the end of its
// header. One without Content-Length or Transfer-Encoding has none: its
// length reads -2 here (TestFasthttpBodyStreamOnlyWithBody).
func bodyTimeout(d time.Duration) func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		if cl := h.ContentLength(); cl == 0 || cl == -2 {
			return fasthttp.RequestConfig{MaxRequestBodySize: 1}
		}
		return fasthttp.RequestConfig{ReadTimeout: d, MaxRequestBodySize: 1}
	}
}

// checkLimits refuses a Config with a limit left at zero.
func checkLimits(cfg Config) error {
	for _, l := range []struct {
		name string
		set  bool
	}{
		{"header timeout", cfg.HeaderTimeout > 0}, {"read timeout", cfg.ReadTimeout > 0},
		{"write timeout", cfg.WriteTimeout > 0}, {"idle timeout", cfg.IdleTimeout > 0},
		{"tunnel timeout", cfg.TunnelTimeout > 0}, {"max header bytes", cfg.MaxHeaderBytes > 0},
		{"max body bytes", cfg.MaxBodyBytes > 0}, {"connect timeout", cfg.ConnectTimeout > 0},
		{"IPv6 source prefix", cfg.SourcePrefixV6 > 0 && cfg.SourcePrefixV6 <= 128},
	} {
		if !l.set {
			return fmt.Errorf("%w: listener %q: %s not set", ErrConfig, cfg.Name, l.name)
		}
	}
	return nil
}

// build turns cfg into a state, reusing the counters of routes that keep
// their name.
func (s *Server) build(cfg Config) (*state, error) {
	if err := checkLimits(cfg); err != nil {
		return nil, err
	}
	if cfg.Retries < 0 {
		return nil, fmt.Errorf("%w: listener %q: negative retries", ErrConfig, cfg.Name)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	specs := make([]route.Spec, len(cfg.Routes))
	routes := make([]liveRoute, len(cfg.Routes))
	for i, r := range cfg.Routes {
		if r.Pool == nil {
			return nil, fmt.Errorf("%w: listener %q: route %q has no pool", ErrConfig, cfg.Name, r.Name)
		}
		if r.Limit != nil && r.LimitKey.Kind == 0 {
			return nil, fmt.Errorf("%w: listener %q: route %q has a rate limit without a key", ErrConfig, cfg.Name, r.Name)
		}
		specs[i] = r.Spec
		if specs[i].Name == "" {
			specs[i].Name = r.Name
		}
		routes[i] = liveRoute{Route: r, stats: s.stats.route(r.Name)}
		if r.Auth != nil {
			for _, f := range r.Auth.Forwarded() {
				routes[i].forwardBits |= headerBit([]byte(f.Header))
			}
		}
	}
	table, err := route.Compile(specs)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
	}
	st := &state{cfg: cfg, table: table, routes: routes, trusted: cfg.TrustedProxies, now: cfg.Now, owner: s.stats,
		pathMode: cfg.PathNormalization}
	for _, sp := range specs {
		for name := range sp.Headers {
			if !slices.ContainsFunc(st.routeHeaders, func(n string) bool { return strings.EqualFold(n, name) }) {
				st.routeHeaders = append(st.routeHeaders, name)
			}
		}
	}
	for _, r := range routes {
		if r.Auth == nil {
			continue
		}
		for _, f := range r.Auth.Forwarded() {
			if !slices.ContainsFunc(st.claimHeaders, func(g auth.ForwardClaim) bool { return strings.EqualFold(g.Header, f.Header) }) {
				st.claimHeaders = append(st.claimHeaders, f)
			}
		}
	}
	if len(st.routeHeaders) > maxRouteHeaders {
		return nil, fmt.Errorf("%w: listener %q: routes match on %d header names, more than %d", ErrConfig, cfg.Name, len(st.routeHeaders), maxRouteHeaders)
	}
	st.proxy = &proxyStage{s: s}
	st.chain = newChain(st.proxy)
	return st, nil
}

// Update swaps in a new configuration atomically: requests already past
// routing finish under the old one, new requests see the new one. Timeouts,
// size limits and MaxConnections keep their first values (see
// NeedsSuccessor and Successor).
func (s *Server) Update(cfg Config) error {
	st, err := s.build(cfg)
	if err != nil {
		return err
	}
	s.state.Store(st)
	s.pruneClients(st)
	return nil
}

// Serve accepts connections on ln until Shutdown; it returns nil after a
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.watch.serve()
	s.pruner.Do(func() { go s.pruneLimits(s.watch.stop, time.NewTicker(pruneEvery).C) })
	err := s.srv.Serve(watchListener{ln, s.watch})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets requests in flight and upgraded
// connections finish until ctx ends, then closes whatever is left, and the
// backend connection pools. It is how a listener stops.
func (s *Server) Shutdown(ctx context.Context) error { return s.shutdown(ctx, true) }

// Retire is Shutdown for a server another has taken over from (a reload):
// requests in flight get until ctx ends, but what outlives it, a WebSocket
// or an event stream, goes on under its own timeouts (tunnel_timeout,
// read_timeout) on the old configuration until it ends, as old workers do
// in HAProxy and nginx. A request that outlives ctx is answered with
// Connection: close. Shutdown may follow, to close what is left.
func (s *Server) Retire(ctx context.Context) error { return s.shutdown(ctx, false) }

// Wait waits until no client connection is left, or ctx ends.
func (s *Server) Wait(ctx context.Context) error { return s.watch.waitClients(ctx) }

func (s *Server) shutdown(ctx context.Context, closeLeft bool) error {
	s.stopping.Store(true)
	err := s.srv.ShutdownWithContext(ctx)
	s.watch.shutdown()
	s.clients.Range(func(k, v any) bool {
		v.(*fasthttp.HostClient).CloseIdleConnections()
		return true
	})
	if !closeLeft {
		return err
	}
	if err == nil {
		// fasthttp does not wait for upgraded connections: they get what
		// is left of ctx (TestFasthttpShutdownLeavesHijacked).
		err = s.watch.waitClients(ctx)
	}
	if err != nil {
		// Time is up: what is still open (an event stream that keeps
		// sending, a tunnel, a slow backend) is closed now.
		s.watch.closeAll()
	}
	return err
}

// parseError answers requests fasthttp could not parse. The connection is
// closed after the answer in every case (TestFasthttpErrorHandler).
func (s *Server) parseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		s.stats.reject(reasonHeaderTooLarge)
		ctx.Error("request header too large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.stats.reject(reasonBodyTooLarge)
		ctx.Error("request body too large", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		s.stats.reject(reasonTimeout)
		ctx.Error("request timeout", fasthttp.StatusRequestTimeout)
	default:
		s.stats.reject(reasonBadRequest)
		ctx.Error("bad request", fasthttp.StatusBadRequest)
	}
}

// fasthttpLogger sends fasthttp's own messages to slog at debug level: they
// are about client misbehaviour and must not flood the log.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}
