package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/healthcheck"
)

// Defaults, as configs/lbd.example.toml documents them.
const (
	defaultWorkers         = 0
	defaultAdminSocket     = "/run/lbd/admin.sock"
	defaultMetricsListen   = "127.0.0.1:9090"
	defaultLogLevel        = "info"
	defaultLogFormat       = "text"
	defaultShutdownTimeout = "30s"
	defaultStateFile       = ""

	defaultProtocol       = ProtocolTCP
	defaultConnectTimeout = "3s"
	defaultIdleTimeout    = "10m"
	defaultRetries        = 2
	defaultUDPMaxFlows    = 100000
	// A flow without a reply this long after it began ends: a forged
	// source holds its place no longer than that.
	defaultUDPReplyTimeout = "5s"
	defaultUDPResponses    = 0

	defaultAlgorithm       = AlgorithmMaglev
	defaultHash            = HashSourceIP
	defaultMaglevTableSize = 65537
	defaultPassiveFailures = 5

	defaultWeight = 100

	defaultHealthType = HealthCheckTCP
	defaultHealthRise = healthcheck.DefaultRise
	defaultHealthFall = healthcheck.DefaultFall
	defaultHealthPath = healthcheck.DefaultPath
)

// The health checker's defaults, in the config's words.
var (
	defaultHealthInterval = healthcheck.DefaultInterval.String()
	defaultHealthTimeout  = healthcheck.DefaultTimeout.String()
	defaultExpectStatus   = fmt.Sprintf("%d-%d", healthcheck.DefaultExpectStatusMin, healthcheck.DefaultExpectStatusMax)
)

// Limits on values.
const (
	maxWorkers         = 1024
	maxRetries         = 15 // balancer.MaxTried is 16: the first pick and its retries
	minWeight          = 1
	maxWeight          = 10000
	minMaglevTableSize = 3
	maxMaglevTableSize = 1 << 24
	maxHealthCount     = 1000
	maxUnixSocketPath  = 107 // sun_path is 108 bytes with the terminating NUL
)

// build checks raw and returns the typed config. Problems are collected in
// v.errs; the returned config is meaningful only when there are none.
func (v *validator) build(raw *rawConfig) *Config {
	cfg := &Config{File: v.file}
	cfg.Global = v.global(&raw.Global)

	auths := map[string]int{} // name → line of the first block with it
	for i := range raw.Auth {
		a := v.auth(i, &raw.Auth[i])
		if a.Name != "" {
			if line, dup := auths[a.Name]; dup {
				v.errorf(fmt.Sprintf("auth[%d].name", i), "auth %q is already defined at line %d", a.Name, line)
			} else {
				auths[a.Name] = a.Line
			}
		}
		cfg.Auths = append(cfg.Auths, a)
	}

	pools := map[string]int{} // name → line of the first pool with it
	for i := range raw.Pool {
		p := v.pool(i, &raw.Pool[i])
		if p.Name != "" {
			if line, dup := pools[p.Name]; dup {
				v.errorf(fmt.Sprintf("pool[%d].name", i), "pool %q is already defined at line %d", p.Name, line)
			} else {
				pools[p.Name] = p.Line
			}
		}
		cfg.Pools = append(cfg.Pools, p)
	}

	names := map[string]int{}
	binds := map[string]int{}
	for i := range raw.Listener {
		l := v.listener(i, &raw.Listener[i], pools, auths)
		if l.Name != "" {
			if line, dup := names[l.Name]; dup {
				v.errorf(fmt.Sprintf("listener[%d].name", i), "listener %q is already defined at line %d", l.Name, line)
			} else {
				names[l.Name] = l.Line
			}
		}
		if l.Bind.IsValid() && l.Bind.Port() != 0 { // port 0: each gets a port of its own
			transport := l.Protocol
			if transport == ProtocolHTTP {
				transport = ProtocolTCP // one TCP port serves one listener
			}
			key := transport + " " + l.Bind.String()
			if line, dup := binds[key]; dup {
				v.errorf(fmt.Sprintf("listener[%d].bind", i), "%s: bind %s (%s) is already used by the listener at line %d", listenerWhat(i, l.Name), l.Bind, l.Protocol, line)
			} else {
				binds[key] = l.Line
			}
		}
		cfg.Listeners = append(cfg.Listeners, l)
	}
	if len(raw.Listener) == 0 {
		v.errs = append(v.errs, &Error{File: v.file, Msg: "no listeners: add at least one [[listener]]"})
	}
	return cfg
}

func (v *validator) global(r *rawGlobal) Global {
	s := scope{v: v, path: "global", what: "global"}
	g := Global{
		Workers:         s.integer("workers", r.Workers, defaultWorkers, 0, maxWorkers),
		AdminSocket:     s.str("admin_socket", r.AdminSocket, defaultAdminSocket),
		MetricsListen:   s.str("metrics_listen", r.MetricsListen, defaultMetricsListen),
		LogFormat:       s.oneOf("log_format", r.LogFormat, defaultLogFormat, "text", "json"),
		ShutdownTimeout: s.duration("shutdown_timeout", r.ShutdownTimeout, defaultShutdownTimeout, true),
		StateFile:       s.str("state_file", r.StateFile, defaultStateFile),
	}

	switch level := s.oneOf("log_level", r.LogLevel, defaultLogLevel, "debug", "info", "warn", "error"); level {
	case "debug":
		g.LogLevel = slog.LevelDebug
	case "warn":
		g.LogLevel = slog.LevelWarn
	case "error":
		g.LogLevel = slog.LevelError
	default:
		g.LogLevel = slog.LevelInfo
	}

	switch {
	case g.AdminSocket == "":
		s.errorf("admin_socket", "admin_socket must not be empty")
		g.AdminSocket = defaultAdminSocket
	case len(g.AdminSocket) > maxUnixSocketPath:
		s.errorf("admin_socket", "admin_socket is %d bytes long; a unix socket path may have at most %d", len(g.AdminSocket), maxUnixSocketPath)
	}

	if g.MetricsListen != "" {
		if _, err := parseHostPort(g.MetricsListen); err != nil {
			s.errorf("metrics_listen", "metrics_listen %q %s", g.MetricsListen, err)
		}
	}
	return g
}

func listenerWhat(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("listener #%d", i+1)
	}
	return fmt.Sprintf("listener %q", name)
}

func (v *validator) listener(i int, r *rawListener, pools, auths map[string]int) Listener {
	s := scope{v: v, path: fmt.Sprintf("listener[%d]", i)}
	l := Listener{Line: v.pos.line(s.path)}

	s.what = listenerWhat(i, "")
	if name, ok := s.given("name", r.Name); ok {
		if err := checkName(name); err != nil {
			s.errorf("name", "name %q %s", name, err)
		} else {
			l.Name = name
			s.what = listenerWhat(i, name)
		}
	} else if !r.Name.Set {
		s.errorf("", "name is missing")
	}

	l.Protocol = s.str("protocol", r.Protocol, defaultProtocol)
	switch l.Protocol {
	case ProtocolTCP, ProtocolUDP, ProtocolHTTP:
	default:
		s.errorf("protocol", "protocol %q is not one of %s", l.Protocol, quoteList([]string{"tcp", "udp", "http"}))
	}
	l.UDPMaxFlows = s.integer("udp_max_flows", r.UDPMaxFlows, defaultUDPMaxFlows, 1, maxInt)
	l.UDPResponses = s.integer("udp_responses", r.UDPResponses, defaultUDPResponses, 0, maxInt)
	l.UDPReuseSockets = s.boolean("udp_reuse_sockets", r.UDPReuseSockets)
	if l.Protocol == ProtocolUDP {
		l.UDPReplyTimeout = s.duration("udp_reply_timeout", r.UDPReplyTimeout, defaultUDPReplyTimeout, true)
	}
	if l.UDPReuseSockets && l.UDPResponses == 0 && l.Protocol == ProtocolUDP {
		s.errorf("udp_reuse_sockets", "udp_reuse_sockets needs udp_responses: only a flow that got all its replies leaves its socket")
	}
	if l.Protocol != ProtocolUDP {
		for _, k := range []struct {
			key string
			set bool
		}{{"udp_max_flows", r.UDPMaxFlows.Set}, {"udp_responses", r.UDPResponses.Set}, {"udp_reuse_sockets", r.UDPReuseSockets.Set}, {"udp_reply_timeout", r.UDPReplyTimeout.Set}} {
			if k.set {
				s.errorf(k.key, "%s applies to udp listeners only", k.key)
			}
		}
	}
	if bind, ok := s.given("bind", r.Bind); ok {
		if ap, err := parseHostPort(bind); err != nil {
			s.errorf("bind", "bind %q %s", bind, err)
		} else {
			l.Bind = ap
		}
	} else if !r.Bind.Set {
		s.errorf("", "bind is missing")
	}

	if pool, ok := s.given("pool", r.Pool); ok {
		l.Pool = pool
		if _, ok := pools[pool]; !ok {
			s.errorf("pool", "pool %q is not defined", pool)
		}
	} else if !r.Pool.Set && (l.Protocol == ProtocolTCP || l.Protocol == ProtocolUDP) {
		s.errorf("", "pool is missing: a %s listener needs the pool it feeds", l.Protocol)
	}

	l.ProxyProtocol = s.oneOf("proxy_protocol", r.ProxyProtocol, ProxyProtocolOff, ProxyProtocolOff, ProxyProtocolV1, ProxyProtocolV2)
	l.AcceptProxyProtocol = s.boolean("accept_proxy_protocol", r.AcceptProxyProtocol)
	if r.TrustedProxies.Set && s.typeOK("trusted_proxies", "an array of strings", r.TrustedProxies.Bad) {
		for _, text := range r.TrustedProxies.Val {
			p, err := parsePrefix(text)
			if err != nil {
				s.errorf("trusted_proxies", "trusted_proxies: %q is not a CIDR prefix or IP address", text)
				continue
			}
			l.TrustedProxies = append(l.TrustedProxies, p)
		}
	}
	if l.AcceptProxyProtocol && len(r.TrustedProxies.Val) == 0 {
		s.errorf("accept_proxy_protocol", "accept_proxy_protocol needs trusted_proxies: the CIDRs allowed to send a PROXY header")
	}

	if l.Protocol == ProtocolUDP {
		// PROXY v1 is text for TCP only; v2 has a DGRAM transport. An
		// inbound header on every datagram is not supported.
		if l.ProxyProtocol == ProxyProtocolV1 {
			s.errorf("proxy_protocol", `proxy_protocol "v1" cannot carry UDP; use "v2"`)
		}
		if l.AcceptProxyProtocol {
			s.errorf("accept_proxy_protocol", "accept_proxy_protocol is not supported on udp listeners")
		}
	}
	v.httpListener(s, r, &l, pools, auths)
	maxConns := int64(0)
	if l.Protocol == ProtocolHTTP {
		maxConns = DefaultHTTPMaxConnections
	}
	l.MaxConnections = s.integer("max_connections", r.MaxConnections, maxConns, 0, maxInt)
	l.ConnectTimeout = s.duration("connect_timeout", r.ConnectTimeout, defaultConnectTimeout, false)
	l.IdleTimeout = s.duration("idle_timeout", r.IdleTimeout, defaultIdleTimeout, false)
	l.Retries = s.integer("retries", r.Retries, defaultRetries, 0, maxRetries)
	return l
}

const maxInt = 1<<31 - 1 // fits int everywhere; far above any real limit

func (v *validator) pool(i int, r *rawPool) Pool {
	s := scope{v: v, path: fmt.Sprintf("pool[%d]", i), what: fmt.Sprintf("pool #%d", i+1)}
	p := Pool{Line: v.pos.line(s.path)}

	if name, ok := s.given("name", r.Name); ok {
		if err := checkName(name); err != nil {
			s.errorf("name", "name %q %s", name, err)
		} else {
			p.Name = name
			s.what = fmt.Sprintf("pool %q", name)
		}
	} else if !r.Name.Set {
		s.errorf("", "name is missing")
	}

	p.Algorithm = s.oneOf("algorithm", r.Algorithm, defaultAlgorithm, AlgorithmMaglev, AlgorithmLeastConn, AlgorithmWRR, AlgorithmP2C)
	p.Hash = s.oneOf("hash", r.Hash, defaultHash, HashSourceIP, HashSourceIPPort)
	p.MaglevTableSize = s.integer("maglev_table_size", r.MaglevTableSize, defaultMaglevTableSize, minMaglevTableSize, maxMaglevTableSize)
	if r.MaglevTableSize.Set && !balancer.IsPrime(p.MaglevTableSize) {
		s.errorf("maglev_table_size", "maglev_table_size %d is not prime (try %d)", p.MaglevTableSize, nextPrime(p.MaglevTableSize))
		p.MaglevTableSize = defaultMaglevTableSize
	}
	p.PassiveFailures = s.integer("passive_failures", r.PassiveFailures, defaultPassiveFailures, 0, maxInt)

	names := map[string]int{}
	addrs := map[netip.AddrPort]int{}
	for j := range r.Backend {
		b := v.backend(s, j, &r.Backend[j])
		at := fmt.Sprintf("%s.backend[%d]", s.path, j)
		addrDup := false
		if b.Address.IsValid() {
			var line int
			if line, addrDup = addrs[b.Address]; addrDup {
				v.errorf(at+".address", "%s: backend address %s is already used at line %d", s.what, b.Address, line)
			} else {
				addrs[b.Address] = b.Line
			}
		}
		// Two unnamed backends with one address also share a name; the
		// address is the problem to report.
		if b.Name != "" && !(addrDup && !r.Backend[j].Name.Set) {
			if line, dup := names[b.Name]; dup {
				v.errorf(at+".name", "%s: backend name %q is already used at line %d", s.what, b.Name, line)
			} else {
				names[b.Name] = b.Line
			}
		}
		p.Backends = append(p.Backends, b)
	}
	if len(r.Backend) == 0 {
		s.errorf("", "no backends: add at least one [[pool.backend]]")
	}
	if p.Algorithm == AlgorithmMaglev && len(p.Backends) >= p.MaglevTableSize {
		s.errorf("maglev_table_size", "maglev_table_size %d must be larger than the number of backends (%d)", p.MaglevTableSize, len(p.Backends))
	}

	p.HealthCheck = v.healthCheck(s, r.HealthCheck)
	return p
}

func (v *validator) backend(ps scope, j int, r *rawBackend) Backend {
	s := scope{v: v, path: fmt.Sprintf("%s.backend[%d]", ps.path, j), what: fmt.Sprintf("%s: backend #%d", ps.what, j+1)}
	b := Backend{Line: v.pos.line(s.path)}

	if addr, ok := s.given("address", r.Address); ok {
		if ap, err := parseHostPort(addr); err != nil {
			s.errorf("address", "address %q %s", addr, err)
		} else if ap.Addr().IsUnspecified() {
			s.errorf("address", "address %q: %s is not a backend's address", addr, ap.Addr())
		} else if ap.Port() == 0 {
			s.errorf("address", "address %q needs a port in 1..65535", addr)
		} else {
			b.Address = ap
			b.Name = ap.String()
			s.what = fmt.Sprintf("%s: backend %s", ps.what, b.Name)
		}
	} else if !r.Address.Set {
		s.errorf("", "address is missing")
	}

	if name, ok := s.given("name", r.Name); ok {
		if err := checkBackendName(name); err != nil {
			s.errorf("name", "name %q %s", name, err)
		} else {
			b.Name = name
		}
	}

	b.Weight = s.integer("weight", r.Weight, defaultWeight, minWeight, maxWeight)
	b.MaxConnections = s.integer("max_connections", r.MaxConnections, 0, 0, maxInt)
	return b
}

func (v *validator) healthCheck(ps scope, r *rawHealthChk) HealthCheck {
	if r == nil {
		r = &rawHealthChk{}
	}
	s := scope{v: v, path: ps.path + ".health_check", what: ps.what + ": health_check"}
	h := HealthCheck{
		Type:     s.oneOf("type", r.Type, defaultHealthType, HealthCheckTCP, HealthCheckHTTP, HealthCheckNone),
		Interval: s.duration("interval", r.Interval, defaultHealthInterval, false),
		Timeout:  s.duration("timeout", r.Timeout, defaultHealthTimeout, false),
		Rise:     s.integer("rise", r.Rise, defaultHealthRise, 1, maxHealthCount),
		Fall:     s.integer("fall", r.Fall, defaultHealthFall, 1, maxHealthCount),
		Port:     s.integer("port", r.Port, 0, 0, 65535),
		Path:     s.str("path", r.Path, defaultHealthPath),
		Host:     s.str("host", r.Host, ""),
	}
	if h.Timeout > h.Interval && !r.Timeout.Set {
		h.Timeout = h.Interval // a short interval shortens the default timeout
	}
	if h.Timeout > h.Interval {
		s.errorf("timeout", "timeout %s must not exceed interval %s", h.Timeout, h.Interval)
	}
	if !strings.HasPrefix(h.Path, "/") || strings.ContainsFunc(h.Path, isSpaceOrControl) {
		s.errorf("path", "path %q must start with '/' and hold no spaces or control characters", h.Path)
		h.Path = defaultHealthPath
	}
	if strings.ContainsFunc(h.Host, isSpaceOrControl) {
		s.errorf("host", "host %q must hold no spaces or control characters", h.Host)
		h.Host = ""
	}
	status := s.str("expect_status", r.ExpectStatus, defaultExpectStatus)
	lo, hi, err := parseStatusRange(status)
	if err != nil {
		s.errorf("expect_status", "expect_status %q %s", status, err)
		lo, hi, _ = parseStatusRange(defaultExpectStatus)
	}
	h.ExpectStatusMin, h.ExpectStatusMax = lo, hi
	return h
}
