package l7

import (
	"sync"
	"sync/atomic"
	"time"
)

// DurationBuckets are the upper bounds, in seconds, of the request-duration
// histogram: from 250µs, a small answer on the same host, to 10s.
var DurationBuckets = []float64{0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Reasons a request is refused before it reaches a backend, as reported in
// Stats.Rejected.
const (
	ReasonAuth           = "auth"
	ReasonRateLimit      = "rate_limit"
	ReasonNoRoute        = "no_route"
	ReasonFraming        = "framing"          // hostile framing (CL+TE, obs-fold, bare LF, ...)
	ReasonUpgrade        = "upgrade"          // h2c or another Upgrade
	ReasonBadRequest     = "bad_request"      // fasthttp could not parse it
	ReasonHeaderTooLarge = "header_too_large" // 431
	ReasonBodyTooLarge   = "body_too_large"   // 413
	ReasonTimeout        = "timeout"          // 408
)

type reason int

const (
	reasonAuth reason = iota
	reasonRateLimit
	reasonNoRoute
	reasonFraming
	reasonUpgrade
	reasonBadRequest
	reasonHeaderTooLarge
	reasonBodyTooLarge
	reasonTimeout
	numReasons
)

var reasonNames = [numReasons]string{ReasonAuth, ReasonRateLimit, ReasonNoRoute, ReasonFraming,
	ReasonUpgrade, ReasonBadRequest, ReasonHeaderTooLarge, ReasonBodyTooLarge, ReasonTimeout}

// listenerStats are the counters of one Server. They outlive reloads; a
// route keeps its counters across a reload as long as it keeps its name.
type listenerStats struct {
	rejected [numReasons]atomic.Uint64

	mu     sync.Mutex
	routes map[string]*routeStats
	order  []string
}

func newListenerStats() *listenerStats {
	return &listenerStats{routes: map[string]*routeStats{}}
}

func (l *listenerStats) reject(r reason) { l.rejected[r].Add(1) }

// route returns the counters of the route called name.
func (l *listenerStats) route(name string) *routeStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rs, ok := l.routes[name]; ok {
		return rs
	}
	rs := &routeStats{buckets: make([]atomic.Uint64, len(DurationBuckets))}
	l.routes[name] = rs
	l.order = append(l.order, name)
	return rs
}

// reject counts a refusal, on the listener and, once routed, on the route.
func (st *state) reject(x *exchange, r reason) {
	st.owner.reject(r)
	if x.route != nil {
		x.route.stats.rejected[r].Add(1)
	}
}

// maxStatus bounds the status codes counted one by one; others count as
// status 0.
const maxStatus = 600

// routeStats are one route's counters. All are atomics, written on the
// request path without locks.
type routeStats struct {
	codes         [maxStatus]atomic.Uint64
	rejected      [numReasons]atomic.Uint64
	noBackend     atomic.Uint64
	backendErrors atomic.Uint64
	count         atomic.Uint64
	sumNanos      atomic.Uint64
	buckets       []atomic.Uint64 // not cumulative; Stats sums them
}

func (r *routeStats) observe(code int, d time.Duration) {
	if code < 0 || code >= maxStatus {
		code = 0
	}
	r.codes[code].Add(1)
	r.count.Add(1)
	r.sumNanos.Add(uint64(d))
	s := d.Seconds()
	for i, ub := range DurationBuckets {
		if s <= ub {
			r.buckets[i].Add(1)
			return
		}
	}
}

// Stats is a snapshot of a Server's counters, for the metrics package.
type Stats struct {
	// Rejected counts refusals by reason (the Reason* constants) over the
	// whole listener, routed or not.
	Rejected map[string]uint64
	// Routes holds one entry per route name ever configured, in the order
	// they first appeared.
	Routes []RouteStats
}

// RouteStats are one route's counters.
type RouteStats struct {
	Name string
	// Requests counts answers by status code.
	Requests map[int]uint64
	// Rejected counts this route's refusals by reason (auth, rate_limit,
	// upgrade, framing).
	Rejected map[string]uint64
	// NoBackend counts 503s for want of an eligible backend; BackendErrors
	// counts 502s.
	NoBackend, BackendErrors uint64
	// Duration is the request-duration histogram.
	Duration Histogram
}

// Histogram is a cumulative histogram over DurationBuckets.
type Histogram struct {
	Count uint64
	Sum   float64 // seconds
	// Cumulative[i] counts requests that took at most DurationBuckets[i].
	Cumulative []uint64
}

// Stats returns a snapshot of the counters. Counters read one by one while
// requests run may be a request apart from each other.
func (s *Server) Stats() Stats {
	l := s.stats
	out := Stats{Rejected: map[string]uint64{}}
	for i := range l.rejected {
		if n := l.rejected[i].Load(); n > 0 {
			out.Rejected[reasonNames[i]] = n
		}
	}
	l.mu.Lock()
	names := append([]string(nil), l.order...)
	routes := make([]*routeStats, len(names))
	for i, n := range names {
		routes[i] = l.routes[n]
	}
	l.mu.Unlock()
	for i, rs := range routes {
		r := RouteStats{Name: names[i], Requests: map[int]uint64{}, Rejected: map[string]uint64{},
			NoBackend: rs.noBackend.Load(), BackendErrors: rs.backendErrors.Load()}
		for c := range rs.codes {
			if n := rs.codes[c].Load(); n > 0 {
				r.Requests[c] = n
			}
		}
		for j := range rs.rejected {
			if n := rs.rejected[j].Load(); n > 0 {
				r.Rejected[reasonNames[j]] = n
			}
		}
		r.Duration.Count = rs.count.Load()
		r.Duration.Sum = time.Duration(rs.sumNanos.Load()).Seconds()
		r.Duration.Cumulative = make([]uint64, len(DurationBuckets))
		var cum uint64
		for j := range rs.buckets {
			cum += rs.buckets[j].Load()
			r.Duration.Cumulative[j] = cum
		}
		out.Routes = append(out.Routes, r)
	}
	return out
}
