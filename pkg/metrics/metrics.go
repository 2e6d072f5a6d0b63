// Package metrics exposes lbd's counters to Prometheus. The data plane
// keeps its counters per event loop, written only by their loop (the http
// listeners' in shards of their own); the collector here sums them when
// Prometheus scrapes, so forwarding never waits on metrics.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listener is one listener's counters, summed over loops.
type Listener struct {
	Name        string
	Connections uint64
	Active      int64
	// Rejected maps a reason (max_connections, no_backend, proxy_header)
	// to its count; tcp listeners only.
	Rejected map[string]uint64
	// UDP holds a udp listener's datagram counters; nil for tcp. Active
	// is then the number of live flows.
	UDP *UDP
}

// UDP is a udp listener's datagram counters.
type UDP struct {
	ToBackend, ToClient uint64
	// Dropped maps a reason (max_flows, no_backend, backend_error,
	// client_error) to its count.
	Dropped map[string]uint64
}

// Backend is one backend's counters, summed over loops.
type Backend struct {
	Pool, Name     string
	Connections    uint64
	Active         int64
	BytesToBackend uint64
	BytesToClient  uint64
	ConnectErrors  uint64
	// Up is the backend's health.
	Up bool
	// Draining and Disabled are the operator's state.
	Draining, Disabled bool
	ChecksOK           uint64
	ChecksFailed       uint64
}

// Pool is one pool's connect-time histogram.
type Pool struct {
	Name  string
	Count uint64
	Sum   float64 // seconds
	// Buckets maps each upper bound, in seconds, to the cumulative count.
	Buckets map[float64]uint64
}

// HTTPRoute is one http route's counters.
type HTTPRoute struct {
	Listener, Route string
	// Requests counts answers by status code.
	Requests map[int]uint64
	// Rejected counts refusals by reason (auth, rate_limit, no_route, ...).
	Rejected map[string]uint64
	// Duration is the request-duration histogram: Buckets maps each upper
	// bound, in seconds, to its cumulative count.
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

// Source is what the collector reads at scrape time.
type Source interface {
	MetricsListeners() []Listener
	MetricsBackends() []Backend
	MetricsPools() []Pool
	MetricsHTTP() []HTTPRoute
}

var (
	descListenerConns = prometheus.NewDesc("lbd_listener_connections_total",
		"Connections accepted by the listener.", []string{"listener"}, nil)
	descListenerActive = prometheus.NewDesc("lbd_listener_active_connections",
		"Open connections accepted by the listener.", []string{"listener"}, nil)
	descListenerRejected = prometheus.NewDesc("lbd_listener_rejected_total",
		"Connections closed without being forwarded, by reason.", []string{"listener", "reason"}, nil)
	descUDPFlows = prometheus.NewDesc("lbd_udp_flows_active",
		"Live UDP flows of the listener.", []string{"listener"}, nil)
	descUDPDatagrams = prometheus.NewDesc("lbd_udp_datagrams_total",
		"UDP datagrams forwarded, by direction.", []string{"listener", "direction"}, nil)
	descUDPDropped = prometheus.NewDesc("lbd_udp_dropped_total",
		"UDP datagrams dropped, by reason.", []string{"listener", "reason"}, nil)
	descBackendConns = prometheus.NewDesc("lbd_backend_connections_total",
		"Connections established to the backend.", []string{"pool", "backend"}, nil)
	descBackendActive = prometheus.NewDesc("lbd_backend_active_connections",
		"Open connections to the backend.", []string{"pool", "backend"}, nil)
	descBackendBytes = prometheus.NewDesc("lbd_backend_bytes_total",
		"Bytes forwarded, by direction.", []string{"pool", "backend", "direction"}, nil)
	descBackendErrors = prometheus.NewDesc("lbd_backend_connect_errors_total",
		"Failed connects to the backend.", []string{"pool", "backend"}, nil)
	descHTTPRequests = prometheus.NewDesc("lbd_http_requests_total",
		"HTTP requests answered, by status code.", []string{"listener", "route", "code"}, nil)
	descHTTPDuration = prometheus.NewDesc("lbd_http_request_duration_seconds",
		"Time to answer an HTTP request.", []string{"listener", "route"}, nil)
	descHTTPRejected = prometheus.NewDesc("lbd_http_rejected_total",
		"HTTP requests refused before a backend, by reason.", []string{"listener", "route", "reason"}, nil)
	descConnectDuration = prometheus.NewDesc("lbd_backend_connect_duration_seconds",
		"Time to establish a connection to a backend.", []string{"pool"}, nil)
	descBackendUp = prometheus.NewDesc("lbd_backend_up",
		"1 when the backend is healthy.", []string{"pool", "backend"}, nil)
	descBackendState = prometheus.NewDesc("lbd_backend_state",
		"1 for each state the backend is in: up or down (health), draining or disabled (operator).",
		[]string{"pool", "backend", "state"}, nil)
	descHealthChecks = prometheus.NewDesc("lbd_health_checks_total",
		"Active health probes, by result.", []string{"pool", "backend", "result"}, nil)
)

// Collector is a prometheus.Collector over a Source.
type Collector struct{ src Source }

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector reads src on every scrape.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerConns, descListenerActive, descListenerRejected,
		descUDPFlows, descUDPDatagrams, descUDPDropped,
		descBackendConns, descBackendActive, descBackendBytes, descBackendErrors,
		descBackendUp, descBackendState, descHealthChecks, descConnectDuration,
		descHTTPRequests, descHTTPDuration, descHTTPRejected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, l := range c.src.MetricsListeners() {
		counter(descListenerConns, l.Connections, l.Name)
		gauge(descListenerActive, l.Active, l.Name)
		for reason, n := range l.Rejected {
			counter(descListenerRejected, n, l.Name, reason)
		}
		if u := l.UDP; u != nil {
			gauge(descUDPFlows, l.Active, l.Name)
			counter(descUDPDatagrams, u.ToBackend, l.Name, "to_backend")
			counter(descUDPDatagrams, u.ToClient, l.Name, "to_client")
			for reason, n := range u.Dropped {
				counter(descUDPDropped, n, l.Name, reason)
			}
		}
	}
	for _, b := range c.src.MetricsBackends() {
		counter(descBackendConns, b.Connections, b.Pool, b.Name)
		gauge(descBackendActive, b.Active, b.Pool, b.Name)
		counter(descBackendBytes, b.BytesToBackend, b.Pool, b.Name, "to_backend")
		counter(descBackendBytes, b.BytesToClient, b.Pool, b.Name, "to_client")
		counter(descBackendErrors, b.ConnectErrors, b.Pool, b.Name)
		gauge(descBackendUp, b01(b.Up), b.Pool, b.Name)
		gauge(descBackendState, b01(b.Up), b.Pool, b.Name, "up")
		gauge(descBackendState, b01(!b.Up), b.Pool, b.Name, "down")
		gauge(descBackendState, b01(b.Draining), b.Pool, b.Name, "draining")
		gauge(descBackendState, b01(b.Disabled), b.Pool, b.Name, "disabled")
		counter(descHealthChecks, b.ChecksOK, b.Pool, b.Name, "success")
		counter(descHealthChecks, b.ChecksFailed, b.Pool, b.Name, "failure")
	}
	for _, p := range c.src.MetricsPools() {
		ch <- prometheus.MustNewConstHistogram(descConnectDuration, p.Count, p.Sum, p.Buckets, p.Name)
	}
	for _, r := range c.src.MetricsHTTP() {
		for code, n := range r.Requests {
			counter(descHTTPRequests, n, r.Listener, r.Route, strconv.Itoa(code))
		}
		for reason, n := range r.Rejected {
			counter(descHTTPRejected, n, r.Listener, r.Route, reason)
		}
		if r.Buckets != nil {
			ch <- prometheus.MustNewConstHistogram(descHTTPDuration, r.Count, r.Sum, r.Buckets, r.Listener, r.Route)
		}
	}
}

func b01(v bool) int64 {
	if v {
		return 1
	}
	return 0
}

// ReloadCounters counts config reloads. The server updates it; it is a
// collector of its own so that it keeps counting across reloads.
type ReloadCounters struct {
	mu          sync.Mutex
	success     uint64
	failure     uint64
	lastSuccess time.Time
}

var (
	descReloads = prometheus.NewDesc("lbd_config_reloads_total",
		"Config reloads, by result.", []string{"result"}, nil)
	descLastReload = prometheus.NewDesc("lbd_config_last_reload_success_timestamp_seconds",
		"When the config was last loaded successfully (start-up counts).", nil, nil)
)

// Loaded records a successful load at t (start-up or reload).
func (r *ReloadCounters) Loaded(t time.Time, reload bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reload {
		r.success++
	}
	r.lastSuccess = t
}

// Failed records a rejected reload.
func (r *ReloadCounters) Failed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failure++
}

// Counts returns the successful and failed reloads so far.
func (r *ReloadCounters) Counts() (success, failure uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.success, r.failure
}

// Describe implements prometheus.Collector.
func (r *ReloadCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReloads
	ch <- descLastReload
}

// Collect implements prometheus.Collector.
func (r *ReloadCounters) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.success), "success")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.failure), "failure")
	if !r.lastSuccess.IsZero() {
		ch <- prometheus.MustNewConstMetric(descLastReload, prometheus.GaugeValue, float64(r.lastSuccess.UnixNano())/1e9)
	}
}

// Registry holds lbd's collectors with the go_* and process_* ones.
func Registry(src Source, reloads *ReloadCounters) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), reloads, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr and serves reg's metrics at /metrics.
func Listen(addr string, reg *prometheus.Registry) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
