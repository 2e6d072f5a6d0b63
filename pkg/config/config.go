// Package config reads lbd's TOML configuration.
//
// Decoding is strict: unknown keys, wrong types and bad values are errors.
// Every problem in a file is reported, each as an *Error naming FILE:LINE,
// in an ErrorList.
//
// The TOML schema lives in unexported raw structs; one function, build,
// checks them and produces the typed Config that the rest of lbd uses, with
// defaults applied and every value parsed.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/lbd-lb/lbd/healthcheck"
)

// Config is a validated configuration.
type Config struct {
	// File is the name the config was loaded under.
	File string
	// Global is the [global] table, with defaults when it is absent.
	Global Global
	// Listeners are in file order; names and bind addresses are unique.
	Listeners []Listener
	// Pools are in file order; names are unique.
	Pools []Pool
	// Auths are the [[auth]] blocks in file order; names are unique. A block
	// that no route uses is allowed.
	Auths []Auth
}

// Global holds the [global] settings.
type Global struct {
	// Workers is the number of event loops; 0 (the default) means one per
	// CPU.
	Workers int
	// AdminSocket is the path of the admin API's unix socket. Default
	// "/run/lbd/admin.sock".
	AdminSocket string
	// MetricsListen is the IP:port that serves /metrics; "" disables it.
	// Default "127.0.0.1:9090".
	MetricsListen string
	// LogLevel defaults to slog.LevelInfo.
	LogLevel slog.Level
	// LogFormat is "text" (the default) or "json".
	LogFormat string
	// ShutdownTimeout bounds how long open connections may finish after
	// SIGTERM. Default 30s; 0 closes them at once.
	ShutdownTimeout time.Duration
	// StateFile keeps operator state (drain, disable, weights) across
	// restarts; "" (the default) keeps it in memory only.
	StateFile string
}

// Protocols of a listener.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// PROXY protocol versions sent to backends (Listener.ProxyProtocol).
const (
	ProxyProtocolOff = ""
	ProxyProtocolV1  = "v1"
	ProxyProtocolV2  = "v2"
)

// Listener is one [[listener]].
type Listener struct {
	// Name is unique among listeners: letters, digits, '-' and '_'.
	Name string
	// Bind is the IP address and port to listen on.
	Bind netip.AddrPort
	// Protocol is ProtocolTCP (the default), ProtocolUDP or ProtocolHTTP.
	Protocol string
	// Pool is the name of the pool a tcp or udp listener feeds; it exists.
	// It is "" for an http listener, whose routes name their pools.
	Pool string
	// ProxyProtocol is the PROXY header sent to backends: ProxyProtocolOff
	// (the default), ProxyProtocolV1 or ProxyProtocolV2.
	ProxyProtocol string
	// AcceptProxyProtocol makes the listener read an inbound PROXY header
	// (v1 or v2), from TrustedProxies only.
	AcceptProxyProtocol bool
	// TrustedProxies are the peers allowed to send a PROXY header. Non-empty
	// when AcceptProxyProtocol is set. On an http listener they are also the
	// peers whose X-Forwarded-* headers are kept rather than replaced, with
	// or without AcceptProxyProtocol. A bare address in the file becomes a
	// single-address prefix; host bits are masked off.
	TrustedProxies []netip.Prefix
	// MaxConnections caps the listener's open connections; 0 is
	// unlimited. Default 0 on tcp and udp listeners and
	// DefaultHTTPMaxConnections on http listeners, where each connection
	// holds buffers.
	MaxConnections int
	// ConnectTimeout bounds each connect to a backend. Default 3s.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection with no bytes either way. Default 10m.
	IdleTimeout time.Duration
	// Retries is how many further backends are tried when a connect fails,
	// 0..15. Default 2.
	Retries int
	// UDPMaxFlows caps a udp listener's flows; past it new flows are
	// dropped. Default 100000.
	UDPMaxFlows int
	// UDPResponses closes a udp flow after this many replies (1 for DNS);
	// 0, the default, keeps it until IdleTimeout.
	UDPResponses int
	// UDPReuseSockets lets a udp flow that got all its UDPResponses replies
	// leave its backend socket to the next new flow to that backend.
	// Default false: only for protocols whose servers never send more
	// replies than that (DNS), since a late extra reply would reach the
	// next client. Needs UDPResponses.
	UDPReuseSockets bool
	// UDPReplyTimeout ends a udp flow that has had no reply this long
	// after it began (0 = off: only IdleTimeout); and when udp_max_flows is
	// reached, a new flow takes the place of the oldest flow without a
	// reply. Default 5s on udp listeners, 0 elsewhere.
	UDPReplyTimeout time.Duration
	// TLSCertFile and TLSKeyFile, on an http listener, are both set or both
	// empty; when set, TLS is terminated here. Validation checks that the
	// files exist and can be opened; the server parses them at start and on
	// reload. Relative paths are relative to lbd's working directory.
	TLSCertFile, TLSKeyFile string
	// AccessLog turns on an http listener's structured access log. Default
	// false.
	AccessLog bool
	// HeaderTimeout bounds reading an http request's line and header
	// (slowloris); default 10s. ReadTimeout bounds reading its body, once
	// the header is in, and each wait for the backend's response; default
	// 30s. WriteTimeout bounds each write of the response, and of the
	// request to the backend; default 30s. TunnelTimeout closes an
	// upgraded (WebSocket) connection with no bytes either way for that
	// long; default 1h. http listeners only; zero elsewhere.
	HeaderTimeout, ReadTimeout, WriteTimeout, TunnelTimeout time.Duration
	// MaxHeaderBytes bounds an http request's line and header (431 past
	// it), 1024..1048576, default 8192; MaxBodyBytes its body (413 past it),
	// 1..268435456, default 4194304. http listeners only; zero elsewhere.
	MaxHeaderBytes, MaxBodyBytes int
	// PathNormalization is how an http listener normalises request paths
	// before it routes and forwards them: PathStrict (the default),
	// PathMergeSlashes or PathOff. "" on other listeners.
	PathNormalization string
	// StripHeaders are more headers an http listener removes from the
	// requests of peers outside TrustedProxies, in canonical form; lbd
	// always removes X-Real-IP, True-Client-IP, X-Original-URL,
	// X-Rewrite-URL, Forwarded and the X-Forwarded-* headers it does not
	// set itself.
	StripHeaders []string
	// SourcePrefixV6 is the prefix length, 1..128, by which IPv6 clients
	// share a client_ip rate-limit bucket on an http listener; default
	// 64. 0 on other listeners.
	SourcePrefixV6 int
	// Routes are an http listener's [[listener.route]] blocks, in file
	// order, which is the order of matching; never empty on an http
	// listener, always empty on the others.
	Routes []Route
	// Line is where the listener's table starts in the file.
	Line int
}

// Balancing algorithms of a pool.
const (
	AlgorithmMaglev    = "maglev"
	AlgorithmLeastConn = "least_conn"
	AlgorithmWRR       = "wrr"
	AlgorithmP2C       = "p2c"
)

// Maglev hash keys of a pool.
const (
	HashSourceIP     = "source_ip"
	HashSourceIPPort = "source_ip_port"
)

// Pool is one [[pool]].
type Pool struct {
	// Name is unique among pools: letters, digits, '-' and '_'.
	Name string
	// Algorithm is one of the Algorithm constants. Default maglev.
	Algorithm string
	// Hash is the maglev key, HashSourceIP (the default) or
	// HashSourceIPPort.
	Hash string
	// MaglevTableSize is a prime larger than the number of backends.
	// Default 65537.
	MaglevTableSize int
	// PassiveFailures is the number of consecutive connect failures that
	// mark a backend down; 0 turns passive checking off. Default 5.
	PassiveFailures int
	// Backends is never empty. Names and addresses are unique in the pool.
	Backends []Backend
	// HealthCheck is the pool's active check; a pool without a
	// [pool.health_check] table gets the default tcp check.
	HealthCheck HealthCheck
	// Line is where the pool's table starts in the file.
	Line int
}

// Backend is one [[pool.backend]].
type Backend struct {
	// Name identifies the backend to operators and in metrics. It defaults
	// to Address in its canonical form, such as "10.0.1.10:8443" or
	// "[2001:db8::10]:8443".
	Name string
	// Address is an IP address and port: lbd resolves no names.
	Address netip.AddrPort
	// Weight is the relative share of traffic, 1..10000. Default 100.
	Weight int
	// MaxConnections caps open connections to the backend; 0 (the default)
	// is unlimited.
	MaxConnections int
	// Line is where the backend's table starts in the file.
	Line int
}

// Health check types.
const (
	HealthCheckTCP  = healthcheck.TypeTCP
	HealthCheckHTTP = healthcheck.TypeHTTP
	HealthCheckNone = healthcheck.TypeNone
)

// HealthCheck is a pool's [pool.health_check]: the health checker's own
// config, with every default of the checker's filled in.
type HealthCheck = healthcheck.Config

// Pool returns the pool with the given name, or nil.
func (c *Config) Pool(name string) *Pool {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// Load reads and validates the config file at path. On failure the error is
// an ErrorList.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The path is already in the message of err (an *fs.PathError).
		msg := err.Error()
		if pe, ok := errors.AsType[*os.PathError](err); ok {
			msg = pe.Err.Error()
		}
		return nil, ErrorList{{File: path, Msg: msg, err: err}}
	}
	return Parse(path, data)
}

// Parse validates a config held in memory; name stands for the file in
// messages. On failure the error is an ErrorList.
func Parse(name string, data []byte) (*Config, error) {
	v := &validator{file: name}

	var tree map[string]any
	md, err := toml.Decode(string(data), &tree)
	if err != nil {
		if pe, ok := errors.AsType[toml.ParseError](err); ok {
			v.errs = append(v.errs, &Error{File: name, Line: pe.Position.Line, Msg: "invalid TOML: " + pe.Message, err: err})
		} else {
			v.errs = append(v.errs, &Error{File: name, Msg: "invalid TOML: " + err.Error(), err: err})
		}
		return nil, v.errs.err()
	}
	v.pos = scanPositions(data)

	// The decoder aborts at the first table where it expects an array of
	// tables or the reverse, so the structure is checked first, on the
	// generic tree.
	v.checkShape(tree, reflect.TypeFor[rawConfig](), "")
	if len(v.errs) > 0 {
		v.checkKeys(md.Keys(), nil)
		return nil, v.errs.err()
	}

	var raw rawConfig
	md, err = toml.Decode(string(data), &raw)
	if err != nil {
		// Not expected once the shape is right and every leaf accepts any
		// value; reported rather than trusted.
		v.errs = append(v.errs, &Error{File: name, Msg: err.Error(), err: err})
		return nil, v.errs.err()
	}
	v.checkKeys(md.Keys(), md.Undecoded())

	cfg := v.build(&raw)
	if err := v.errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkKeys reports each key that is not in the schema, once, at its line.
// Keys below an unknown key are not reported again.
func (v *validator) checkKeys(keys, undecoded []toml.Key) {
	notDecoded := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		notDecoded[k.String()] = true
	}
	unknown := map[string]bool{}
	for _, k := range keys {
		s := k.String()
		if slices.ContainsFunc(prefixes(k), func(p string) bool { return unknown[p] }) {
			v.pos.nextPlain(s)
			continue
		}
		if knownKey(k) && !notDecoded[s] {
			v.pos.nextPlain(s)
			continue
		}
		unknown[s] = true
		msg := fmt.Sprintf("unknown key %q", s)
		if hint := caseHint(k); hint != "" {
			msg += fmt.Sprintf(" (keys are case-sensitive: did you mean %q?)", hint)
		}
		v.errs = append(v.errs, &Error{File: v.file, Line: v.pos.nextPlain(s), Msg: msg})
	}
}

// prefixes returns the proper prefixes of k as dotted strings.
func prefixes(k toml.Key) []string {
	p := make([]string, 0, len(k)-1)
	for i := 1; i < len(k); i++ {
		p = append(p, k[:i].String())
	}
	return p
}

// caseHint returns the schema key that k matches when case is ignored, or
// "".
func caseHint(k toml.Key) string {
	fixed := make(toml.Key, 0, len(k))
	t := reflect.TypeFor[rawConfig]()
	for _, part := range k {
		if isLeaf(t) {
			fixed = append(fixed, part)
			continue
		}
		found := false
		for f := range t.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if strings.EqualFold(tag, part) {
				fixed = append(fixed, tag)
				t, _ = schemaField(t, tag)
				found = true
				break
			}
		}
		if !found {
			return ""
		}
	}
	return fixed.String()
}

// checkShape reports tables where the schema has arrays of tables, and the
// reverse, and scalars in place of either. t is the raw struct type for data.
func (v *validator) checkShape(data map[string]any, t reflect.Type, path string) {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		f, ok := rawField(t, key)
		if !ok || isLeaf(f) {
			continue // unknown keys are reported by checkKeys
		}
		at := joinPath(path, key)
		val := data[key]
		switch {
		case f.Kind() == reflect.Struct || f.Kind() == reflect.Pointer:
			sub, ok := val.(map[string]any)
			if !ok {
				v.errorf(at, "%s must be a table, not %s", displayKey(at), article(tomlType(val)))
				continue
			}
			v.checkShape(sub, structType(f), at)
		case f.Kind() == reflect.Slice:
			elems, ok := tables(val)
			if !ok {
				v.errorf(at, "%s must be an array of tables, written [[%s]], not %s", displayKey(at), plainKey(at), article(tomlType(val)))
				continue
			}
			for i, e := range elems {
				v.checkShape(e, structType(f), fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
}

// rawField returns the type of the field of struct type t whose TOML name is
// exactly name.
func rawField(t reflect.Type, name string) (reflect.Type, bool) {
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

func structType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// tables returns v as a list of tables if it is one: an array of tables
// from [[x]] headers, or an inline array whose elements are all tables.
func tables(v any) ([]map[string]any, bool) {
	switch v := v.(type) {
	case []map[string]any:
		return v, true
	case []any:
		out := make([]map[string]any, 0, len(v))
		for _, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out = append(out, m)
		}
		return out, true
	}
	return nil, false
}

// plainKey drops the array indices from a path: pool[1].backend becomes
// pool.backend.
func plainKey(path string) string {
	var b strings.Builder
	skip := false
	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// displayKey names the key at path for messages.
func displayKey(path string) string { return fmt.Sprintf("%q", plainKey(path)) }

// article puts "a" or "an" in front of a TOML type name.
func article(typ string) string {
	if typ != "" && strings.ContainsRune("aeiou", rune(typ[0])) {
		return "an " + typ
	}
	return "a " + typ
}

// ListenerDefaults returns what a listener of the given protocol gets for
// every key it leaves out: the one place lbd's listener defaults are
// defined. Name, bind, pool and routes are empty.
func ListenerDefaults(protocol string) Listener {
	v := &validator{pos: scanPositions(nil)}
	l := v.listener(0, &rawListener{Protocol: rawString{Val: protocol, Set: true}}, nil, nil)
	l.Line = 0
	return l
}
