package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The raw structs mirror the TOML schema key for key, including the keys that
// later features will use (udp, http, auth): such keys decode here and are
// rejected by validation, so enabling one means adding its checks and its
// typed field, not touching the schema. Every leaf is a raw* value that
// accepts any TOML type and remembers what it got, so a wrong type is
// reported with its line like any other problem instead of aborting the
// decode.

type rawConfig struct {
	Global   rawGlobal     `toml:"global"`
	Listener []rawListener `toml:"listener"`
	Pool     []rawPool     `toml:"pool"`
	Auth     []rawAuth     `toml:"auth"`
}

type rawGlobal struct {
	Workers         rawInt    `toml:"workers"`
	AdminSocket     rawString `toml:"admin_socket"`
	MetricsListen   rawString `toml:"metrics_listen"`
	LogLevel        rawString `toml:"log_level"`
	LogFormat       rawString `toml:"log_format"`
	ShutdownTimeout rawString `toml:"shutdown_timeout"`
	StateFile       rawString `toml:"state_file"`
}

type rawListener struct {
	Name                rawString  `toml:"name"`
	Bind                rawString  `toml:"bind"`
	Protocol            rawString  `toml:"protocol"`
	Pool                rawString  `toml:"pool"`
	ProxyProtocol       rawString  `toml:"proxy_protocol"`
	AcceptProxyProtocol rawBool    `toml:"accept_proxy_protocol"`
	TrustedProxies      rawStrings `toml:"trusted_proxies"`
	MaxConnections      rawInt     `toml:"max_connections"`
	ConnectTimeout      rawString  `toml:"connect_timeout"`
	IdleTimeout         rawString  `toml:"idle_timeout"`
	Retries             rawInt     `toml:"retries"`

	// udp only.
	UDPMaxFlows     rawInt    `toml:"udp_max_flows"`
	UDPResponses    rawInt    `toml:"udp_responses"`
	UDPReuseSockets rawBool   `toml:"udp_reuse_sockets"`
	UDPReplyTimeout rawString `toml:"udp_reply_timeout"`

	// http only.
	TLSCertFile       rawString  `toml:"tls_cert_file"`
	TLSKeyFile        rawString  `toml:"tls_key_file"`
	AccessLog         rawBool    `toml:"access_log"`
	HeaderTimeout     rawString  `toml:"header_timeout"`
	ReadTimeout       rawString  `toml:"read_timeout"`
	WriteTimeout      rawString  `toml:"write_timeout"`
	TunnelTimeout     rawString  `toml:"tunnel_timeout"`
	MaxHeaderBytes    rawInt     `toml:"max_header_bytes"`
	MaxBodyBytes      rawInt     `toml:"max_body_bytes"`
	PathNormalization rawString  `toml:"path_normalization"`
	StripHeaders      rawStrings `toml:"strip_headers"`
	SourcePrefixV6    rawInt     `toml:"source_prefix_v6"`
	Route             []rawRoute `toml:"route"`
}

// rawRoute is a [[listener.route]] of an http listener (see httpEnabled).
type rawRoute struct {
	Host       rawString `toml:"host"`
	PathPrefix rawString `toml:"path_prefix"`
	Headers    rawAny    `toml:"headers"`
	Pool       rawString `toml:"pool"`
	Auth       rawString `toml:"auth"`
	RateLimit  rawAny    `toml:"rate_limit"`
}

// rawAuth is an [[auth]] block (see httpEnabled).
type rawAuth struct {
	Name           rawString  `toml:"name"`
	Type           rawString  `toml:"type"`
	Algorithms     rawStrings `toml:"algorithms"`
	JWKSFile       rawString  `toml:"jwks_file"`
	HMACSecretFile rawString  `toml:"hmac_secret_file"`
	Issuer         rawString  `toml:"issuer"`
	Audience       rawString  `toml:"audience"`
	Leeway         rawString  `toml:"leeway"`
	ForwardClaims  rawAny     `toml:"forward_claims"`
}

type rawPool struct {
	Name            rawString     `toml:"name"`
	Algorithm       rawString     `toml:"algorithm"`
	Hash            rawString     `toml:"hash"`
	MaglevTableSize rawInt        `toml:"maglev_table_size"`
	PassiveFailures rawInt        `toml:"passive_failures"`
	Backend         []rawBackend  `toml:"backend"`
	HealthCheck     *rawHealthChk `toml:"health_check"`
}

type rawBackend struct {
	Address        rawString `toml:"address"`
	Name           rawString `toml:"name"`
	Weight         rawInt    `toml:"weight"`
	MaxConnections rawInt    `toml:"max_connections"`
}

type rawHealthChk struct {
	Type         rawString `toml:"type"`
	Interval     rawString `toml:"interval"`
	Timeout      rawString `toml:"timeout"`
	Rise         rawInt    `toml:"rise"`
	Fall         rawInt    `toml:"fall"`
	Port         rawInt    `toml:"port"`
	Path         rawString `toml:"path"`
	Host         rawString `toml:"host"`
	ExpectStatus rawString `toml:"expect_status"`
}

// rawString is a TOML string. Set reports that the key was written; Bad
// names the TOML type found instead of a string.
type rawString struct {
	Val string
	Set bool
	Bad string
}

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawString) UnmarshalTOML(v any) error {
	r.Set = true
	if s, ok := v.(string); ok {
		r.Val = s
	} else {
		r.Bad = tomlType(v)
	}
	return nil
}

// rawInt is a TOML integer.
type rawInt struct {
	Val int64
	Set bool
	Bad string
}

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawInt) UnmarshalTOML(v any) error {
	r.Set = true
	if n, ok := v.(int64); ok {
		r.Val = n
	} else {
		r.Bad = tomlType(v)
	}
	return nil
}

// rawBool is a TOML boolean.
type rawBool struct {
	Val bool
	Set bool
	Bad string
}

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawBool) UnmarshalTOML(v any) error {
	r.Set = true
	if b, ok := v.(bool); ok {
		r.Val = b
	} else {
		r.Bad = tomlType(v)
	}
	return nil
}

// rawStrings is a TOML array of strings.
type rawStrings struct {
	Val []string
	Set bool
	Bad string
}

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawStrings) UnmarshalTOML(v any) error {
	r.Set = true
	list, ok := v.([]any)
	if !ok {
		r.Bad = tomlType(v)
		return nil
	}
	r.Val = make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			r.Bad = "array holding " + tomlType(e)
			r.Val = nil
			return nil
		}
		r.Val = append(r.Val, s)
	}
	return nil
}

// rawAny is any TOML value, kept for keys whose schema is not implemented
// yet.
type rawAny struct {
	Val any
	Set bool
}

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawAny) UnmarshalTOML(v any) error {
	r.Val, r.Set = v, true
	return nil
}

// tomlType names the TOML type of a decoded value for error messages.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []any:
		return "array"
	case []map[string]any:
		return "array of tables"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

var unmarshalerType = reflect.TypeFor[toml.Unmarshaler]()

// isLeaf reports whether t decodes itself (a raw* value): the schema ends
// there, and whatever is below it is that value's business.
func isLeaf(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(unmarshalerType)
}

// schemaField returns the type of the field of struct type t that the TOML
// key name decodes into, matching the key exactly. Slices and pointers are
// looked through: a [[pool.backend]] key leads to rawBackend.
func schemaField(t reflect.Type, name string) (reflect.Type, bool) {
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag != name {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		return ft, true
	}
	return nil, false
}

// knownKey reports whether the dotted key k is part of the schema, matching
// case exactly. (The decoder matches field names case-insensitively, which
// would let "Name" and "name" both set the same field.)
func knownKey(k toml.Key) bool {
	t := reflect.TypeFor[rawConfig]()
	for _, part := range k {
		if isLeaf(t) {
			return true
		}
		var ok bool
		if t, ok = schemaField(t, part); !ok {
			return false
		}
	}
	return true
}
