package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

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

// validator collects problems while build turns raw config into typed
// config. Paths such as "pool[1].backend[0].weight" locate keys; see
// positions.
type validator struct {
	file string
	pos  *positions
	errs ErrorList
}

// errorf records a problem at the line of the key at path.
func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: v.pos.line(path), Msg: fmt.Sprintf(format, args...)})
}

// scope prefixes messages about one listener, pool or backend, and locates
// its keys.
type scope struct {
	v    *validator
	path string // e.g. "pool[1]"
	what string // e.g. `pool "gateways"`, `global`
}

func (s scope) at(key string) string {
	if key == "" {
		return s.path
	}
	return s.path + "." + key
}

func (s scope) errorf(key, format string, args ...any) {
	s.v.errorf(s.at(key), "%s: %s", s.what, fmt.Sprintf(format, args...))
}

// typeOK reports a value of the wrong TOML type.
func (s scope) typeOK(key, want, bad string) bool {
	if bad == "" {
		return true
	}
	s.errorf(key, "%s must be %s, not %s", key, want, article(bad))
	return false
}

// str returns the string at key, or def when it is absent or mistyped.
func (s scope) str(key string, r rawString, def string) string {
	if !r.Set || !s.typeOK(key, "a string", r.Bad) {
		return def
	}
	return r.Val
}

// given returns the string at key when it is present and a string.
func (s scope) given(key string, r rawString) (string, bool) {
	if !r.Set || !s.typeOK(key, "a string", r.Bad) {
		return "", false
	}
	return r.Val, true
}

// integer returns the integer at key, or def when it is absent, mistyped or
// outside lo..hi.
func (s scope) integer(key string, r rawInt, def, lo, hi int64) int {
	if !r.Set || !s.typeOK(key, "an integer", r.Bad) {
		return int(def)
	}
	if r.Val < lo || r.Val > hi {
		s.errorf(key, "%s %d is out of range %d..%d", key, r.Val, lo, hi)
		return int(def)
	}
	return int(r.Val)
}

// boolean returns the boolean at key, or false when absent or mistyped.
func (s scope) boolean(key string, r rawBool) bool {
	return r.Set && s.typeOK(key, "a boolean", r.Bad) && r.Val
}

// duration parses the duration at key, or def. Zero is accepted only when
// zeroOK; negative durations never are.
func (s scope) duration(key string, r rawString, def string, zeroOK bool) time.Duration {
	text := s.str(key, r, def)
	d, err := time.ParseDuration(text)
	switch {
	case err != nil:
		s.errorf(key, "%s %q is not a duration: use Go syntax such as \"500ms\", \"3s\" or \"10m\"", key, text)
	case d < 0 || d == 0 && !zeroOK:
		s.errorf(key, "%s %q must be greater than 0", key, text)
	default:
		return d
	}
	d, _ = time.ParseDuration(def)
	return d
}

// oneOf returns the string at key if it is one of choices, else def.
func (s scope) oneOf(key string, r rawString, def string, choices ...string) string {
	val := s.str(key, r, def)
	for _, c := range choices {
		if val == c {
			return val
		}
	}
	s.errorf(key, "%s %q is not one of %s", key, val, quoteList(choices))
	return def
}

func quoteList(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = strconv.Quote(c)
	}
	return strings.Join(q, ", ")
}

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

// checkName checks a listener or pool name. Names appear in metric labels
// and admin API paths, so they are kept plain.
func checkName(name string) error {
	if name == "" {
		return errString("must not be empty")
	}
	for _, c := range []byte(name) {
		if !isNameByte(c) {
			return errString("may hold only letters, digits, '-' and '_'")
		}
	}
	return nil
}

// checkBackendName checks an explicit backend name. It may also hold '.' and
// ':', so that host-like names such as "gw-1.dc2" fit.
func checkBackendName(name string) error {
	if name == "" {
		return errString("must not be empty: leave name out to use the address")
	}
	for _, c := range []byte(name) {
		if !isNameByte(c) && c != '.' && c != ':' {
			return errString("may hold only letters, digits, '-', '_', '.' and ':'")
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// errString is an error that is only ever printed after a value.
type errString string

func (e errString) Error() string { return string(e) }

// parseHostPort parses "IP:port" and "[IPv6]:port" with a port in 0..65535;
// port 0 binds a port the kernel chooses, and is refused for a backend.
// lbd resolves no names: a load balancer's data plane must not depend on
// DNS, and a name resolved once at load time would go stale silently.
func parseHostPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		return ap, nil
	}
	host, port, splitErr := splitHostPort(s)
	switch {
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		return netip.AddrPort{}, errString(`needs a port, as in "[2001:db8::1]:443"`)
	case isAddr(s):
		return netip.AddrPort{}, errString(`needs a port, as in "10.0.0.1:443" or "[2001:db8::1]:443"`)
	case splitErr != nil:
		return netip.AddrPort{}, errString(`is not an IP address and port such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
	case strings.Contains(host, ":") && !strings.HasPrefix(s, "["):
		return netip.AddrPort{}, errString(`is not an IP address and port: write an IPv6 address in brackets, as in "[2001:db8::1]:443"`)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return netip.AddrPort{}, errString("has a bad port: it must be a number in 1..65535")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return netip.AddrPort{}, errString(`has no IP address: host names are not resolved, so give an address such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
	}
	return netip.AddrPort{}, errString(`is not an IP address and port such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// splitHostPort splits at the last colon, removing brackets.
func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errString("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host, port, nil
}

// parsePrefix parses a CIDR prefix or a single address, which stands for
// itself alone. Host bits are masked off.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseStatusRange parses "200" or "200-399".
func parseStatusRange(s string) (lo, hi int, err error) {
	loText, hiText, isRange := strings.Cut(s, "-")
	if !isRange {
		hiText = loText
	}
	lo, okLo := parseDigits(loText)
	hi, okHi := parseDigits(hiText)
	switch {
	case !okLo || !okHi:
		return 0, 0, errString(`must be a status code or a range, such as "200" or "200-399"`)
	case lo < 100 || hi > 599:
		return 0, 0, errString("holds a status outside 100..599")
	case lo > hi:
		return 0, 0, errString("is an empty range")
	}
	return lo, hi, nil
}

// parseDigits parses 1 to 3 decimal digits: no sign, no spaces.
func parseDigits(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func nextPrime(n int) int {
	for !balancer.IsPrime(n) {
		n++
	}
	return n
}
