// Package auth verifies the JWT bearer tokens of the config's auth blocks
// of type "jwt" ([[auth]] in configs/lbd.example.toml).
//
// It knows nothing of any HTTP stack: the HTTP layer hands [Verifier.Verify]
// the raw value of the Authorization header and the current time, answers
// 401 with [Challenge] for every error, and copies the verified claims named
// by [Verifier.ForwardHeaders] into the request after stripping the client's
// copies of those headers.
//
// A Verifier is immutable once built and safe for concurrent use. A reload
// builds a new one with [New], which re-reads the JWKS or secret file; there
// is no package-level state.
package auth

import (
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// MaxTokenSize is the largest token, in bytes, that Verify will look at.
// Longer tokens are refused with ErrTooLarge before any decoding, so that a
// hostile client cannot make the verifier base64-decode and JSON-parse
// megabytes per request.
const MaxTokenSize = 8 << 10

// Challenge is the WWW-Authenticate value that goes with every 401 answer,
// as the HTTP mode promises, whatever the error (including ErrMissing).
const Challenge = `Bearer error="invalid_token"`

// DefaultCacheSize is the number of verified tokens a Verifier remembers
// when Config.CacheSize is zero.
const DefaultCacheSize = 4096

// Config is one auth block of type "jwt", as pkg/config validates it.
type Config struct {
	// Name is the block's name; it prefixes configuration errors.
	Name string
	// Algorithms is the allow-list of JWS "alg" values (RFC 7518): RS256,
	// RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256,
	// HS384, HS512. It must not be empty. "none" is refused in any case.
	Algorithms []string
	// JWKSFile is a JSON Web Key Set (RFC 7517) holding the verification
	// keys. Exactly one of JWKSFile and HMACSecretFile must be set.
	JWKSFile string
	// HMACSecretFile holds the raw HMAC secret; one trailing newline is
	// trimmed. It may only be used when every algorithm is HS*, and it must
	// be at least as long as the largest allowed hash output (32 bytes for
	// HS256, 48 for HS384, 64 for HS512; RFC 7518 §3.2).
	HMACSecretFile string
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// Audience, when set, must be the token's "aud" or one of its elements.
	Audience string
	// Leeway is the clock skew allowed on "exp" and "nbf". Default 0.
	Leeway time.Duration
	// ForwardClaims maps a claim name to the request header that carries its
	// value to the backend.
	ForwardClaims map[string]string
	// CacheSize bounds the verified-token cache: 0 means DefaultCacheSize,
	// a negative value turns the cache off.
	CacheSize int
}

// ForwardClaim is one entry of Config.ForwardClaims.
type ForwardClaim struct {
	// Claim is the claim name in the token payload.
	Claim string
	// Header is the header name in canonical MIME form.
	Header string
}

// Errors. Every error from Verify means 401: either ErrMissing, or a
// *TokenError that matches ErrInvalidToken and one of the reasons below
// under errors.Is.
var (
	// ErrMissing means the request carried no bearer credentials: no
	// Authorization header, or one with another scheme. RFC 6750 §3.1 would
	// answer it with a bare "Bearer" challenge; clients are promised Challenge.
	ErrMissing = errors.New("auth: no bearer token")
	// ErrInvalidToken matches every *TokenError.
	ErrInvalidToken = errors.New("auth: invalid token")

	// ErrTooLarge: the token is longer than MaxTokenSize.
	ErrTooLarge = errors.New("auth: token too large")
	// ErrMalformed: not a JWS compact serialization this package accepts
	// (bad characters, segment count, base64, JSON, header parameters).
	ErrMalformed = errors.New("auth: malformed token")
	// ErrAlgorithm: the "alg" is not in the allow-list ("none" never is).
	ErrAlgorithm = errors.New("auth: algorithm not allowed")
	// ErrUnknownKey: no key has the token's "kid", or the token has no kid
	// and the key set holds more than one key.
	ErrUnknownKey = errors.New("auth: unknown key")
	// ErrKeyMismatch: the selected key cannot be used with the token's
	// "alg" (wrong family or curve, HMAC key too short, or the JWK's own
	// "alg" differs). This is what defeats algorithm confusion.
	ErrKeyMismatch = errors.New("auth: key does not match algorithm")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("auth: bad signature")
	// ErrExpired: now is at or past "exp" plus leeway.
	ErrExpired = errors.New("auth: token expired")
	// ErrNotYetValid: now is before "nbf" minus leeway.
	ErrNotYetValid = errors.New("auth: token not valid yet")
	// ErrIssuer: "iss" is missing or differs from Config.Issuer.
	ErrIssuer = errors.New("auth: wrong issuer")
	// ErrAudience: "aud" is missing or does not hold Config.Audience.
	ErrAudience = errors.New("auth: wrong audience")
	// ErrClaims: the payload is not a JSON object, or a registered claim is
	// missing ("exp" is required) or of the wrong type or range.
	ErrClaims = errors.New("auth: bad claims")
)

// TokenError is the error for a token that was presented and refused. Reason
// is one of the Err* sentinels; Err, if not nil, says more for the logs.
type TokenError struct {
	// Reason is the sentinel that says why, for metrics and tests.
	Reason error
	// Err is the detail, often from the jwt package; it may be nil.
	Err error
}

// Error reads "auth: <reason>: <detail>"; it is meant for logs, not clients.
func (e *TokenError) Error() string {
	if e.Err == nil {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Err.Error()
}

// Unwrap exposes the reason and the detail to errors.Is and errors.As.
func (e *TokenError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

// Is makes every TokenError match ErrInvalidToken.
func (e *TokenError) Is(target error) bool { return target == ErrInvalidToken }

func refuse(reason, detail error) error { return &TokenError{Reason: reason, Err: detail} }

// algInfo describes what key an algorithm needs.
type algInfo struct {
	family  keyFamily
	curve   elliptic.Curve // ES*
	hmacMin int            // HS*: minimum key length, the hash output size
}

type keyFamily int

const (
	familyRSA keyFamily = iota + 1
	familyEC
	familyEd25519
	familyHMAC
)

// algorithms lists every algorithm an allow-list may name.
var algorithms = map[string]algInfo{
	"RS256": {family: familyRSA},
	"RS384": {family: familyRSA},
	"RS512": {family: familyRSA},
	"PS256": {family: familyRSA},
	"PS384": {family: familyRSA},
	"PS512": {family: familyRSA},
	"ES256": {family: familyEC, curve: elliptic.P256()},
	"ES384": {family: familyEC, curve: elliptic.P384()},
	"ES512": {family: familyEC, curve: elliptic.P521()},
	"EdDSA": {family: familyEd25519},
	"HS256": {family: familyHMAC, hmacMin: 32},
	"HS384": {family: familyHMAC, hmacMin: 48},
	"HS512": {family: familyHMAC, hmacMin: 64},
}

// Verifier checks bearer tokens against one auth block. Build it with New.
type Verifier struct {
	name     string
	algs     []string
	keys     *keySet
	issuer   string
	audience string
	leeway   time.Duration
	forward  []ForwardClaim
	parser   *jwt.Parser
	cache    *tokenCache // nil when off

	// onParse, when set by tests, is called each time a token reaches the
	// JWT parser; it proves which paths parse and which do not.
	onParse func()
}

// New validates cfg and loads its keys. Errors name the block and the file.
func New(cfg Config) (*Verifier, error) {
	v, err := newVerifier(cfg)
	if err != nil {
		return nil, fmt.Errorf("auth %q: %w", cfg.Name, err)
	}
	return v, nil
}

func newVerifier(cfg Config) (*Verifier, error) {
	if len(cfg.Algorithms) == 0 {
		return nil, errors.New("algorithms: the allow-list is empty")
	}
	var algs []string
	hmacMin := 0
	for _, a := range cfg.Algorithms {
		if strings.EqualFold(a, "none") {
			return nil, errors.New(`algorithms: "none" is never accepted`)
		}
		info, ok := algorithms[a]
		if !ok {
			return nil, fmt.Errorf("algorithms: unknown algorithm %q (want RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384 or HS512)", a)
		}
		if !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
		hmacMin = max(hmacMin, info.hmacMin)
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("leeway %s is negative", cfg.Leeway)
	}

	var keys *keySet
	var err error
	switch {
	case cfg.JWKSFile != "" && cfg.HMACSecretFile != "":
		return nil, errors.New("set only one of jwks_file and hmac_secret_file")
	case cfg.JWKSFile != "":
		keys, err = loadJWKS(cfg.JWKSFile, algs)
	case cfg.HMACSecretFile != "":
		for _, a := range algs {
			if algorithms[a].family != familyHMAC {
				return nil, fmt.Errorf("algorithm %s needs a jwks_file: hmac_secret_file %s only serves HS256, HS384 and HS512", a, cfg.HMACSecretFile)
			}
		}
		keys, err = loadHMACSecret(cfg.HMACSecretFile, hmacMin)
	default:
		return nil, errors.New("one of jwks_file and hmac_secret_file is required")
	}
	if err != nil {
		return nil, err
	}

	forward, err := forwardClaims(cfg.ForwardClaims)
	if err != nil {
		return nil, err
	}

	v := &Verifier{
		name:     cfg.Name,
		algs:     algs,
		keys:     keys,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		leeway:   cfg.Leeway,
		forward:  forward,
		// Claims are validated apart from parsing (see validate) so that the
		// same checks run on cache hits with the caller's clock.
		parser: jwt.NewParser(
			jwt.WithValidMethods(algs),
			jwt.WithJSONNumber(),
			jwt.WithStrictDecoding(),
			jwt.WithoutClaimsValidation(),
		),
	}
	switch size := cfg.CacheSize; {
	case size == 0:
		v.cache = newTokenCache(DefaultCacheSize)
	case size > 0:
		v.cache = newTokenCache(size)
	}
	return v, nil
}

// headersNeverForwarded may not be set from a claim: they frame the request
// or the connection, or carry the client's own credentials.
var headersNeverForwarded = []string{
	"Authorization", "Connection", "Content-Length", "Content-Type",
	"Cookie", "Host", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Proxy-Connection", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

func forwardClaims(m map[string]string) ([]ForwardClaim, error) {
	var out []ForwardClaim
	for claim, header := range m {
		if claim == "" {
			return nil, fmt.Errorf("forward_claims: empty claim name for header %q", header)
		}
		if !ascii.IsToken(header) {
			return nil, fmt.Errorf("forward_claims: %q is not a valid header name (claim %q)", header, claim)
		}
		h := textproto.CanonicalMIMEHeaderKey(header)
		if slices.Contains(headersNeverForwarded, h) {
			return nil, fmt.Errorf("forward_claims: header %s may not be set from a claim (claim %q)", h, claim)
		}
		out = append(out, ForwardClaim{Claim: claim, Header: h})
	}
	slices.SortFunc(out, func(a, b ForwardClaim) int { return strings.Compare(a.Header, b.Header) })
	for i := 1; i < len(out); i++ {
		if out[i].Header == out[i-1].Header {
			return nil, fmt.Errorf("forward_claims: claims %q and %q both set header %s", out[i-1].Claim, out[i].Claim, out[i].Header)
		}
	}
	return out, nil
}

// Name is the auth block's name.
func (v *Verifier) Name() string { return v.name }

// ForwardHeaders lists the forward_claims, sorted by header. The HTTP layer
// deletes every one of these headers from the client's request first, then
// sets each whose claim Claims.String can render; the slice is a copy.
func (v *Verifier) ForwardHeaders() []ForwardClaim { return slices.Clone(v.forward) }

// Forwarded is ForwardHeaders without the copy, for the request path: the
// caller must not modify it.
func (v *Verifier) Forwarded() []ForwardClaim { return v.forward }

// Verify checks the bearer token in authorization, the raw value of the
// Authorization header ("" when absent), at time now.
//
// The accepted syntax is RFC 6750 §2.1 narrowed to JWS compact form:
// optional leading and trailing spaces or tabs (which HTTP parsers usually
// strip already), the scheme "Bearer" in any case, one or more spaces, then
// the token, made only of base64url characters and exactly two dots. A
// header with another scheme, or none, gives ErrMissing; "Bearer" with no
// token, or anything after the token, gives ErrMalformed.
//
// Key selection: with a JWKS, the token's "kid" picks the key, and a kid the
// set does not hold is refused. A token without a kid may use the set's only
// key when it holds exactly one; otherwise it is refused, since trying every
// key would let a token pick its key. With an HMAC secret file, the secret
// is the only key and "kid" is ignored. The "jku", "x5u", "x5c" and "jwk"
// header parameters are never used, and a "crit" header is refused (RFC 7515
// §4.1.11) since no extension is understood.
//
// Claims: "exp" is required; "nbf" is checked when present; "iss" and "aud"
// when configured; leeway applies to "exp" and "nbf". "iat" is not checked.
//
// The returned Claims are shared with the cache and must not be modified.
func (v *Verifier) Verify(authorization string, now time.Time) (*Claims, error) {
	token, err := bearerToken(authorization)
	if err != nil {
		return nil, err
	}

	var key cacheKey
	if v.cache != nil {
		key = cacheKeyOf(token)
		if c := v.cache.get(key, now); c != nil {
			if err := v.validate(c, now); err != nil {
				return nil, err
			}
			return c, nil
		}
	}

	c, err := v.parse(token)
	if err != nil {
		return nil, err
	}
	if err := v.validate(c, now); err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.put(key, c, now, v.leeway)
	}
	return c, nil
}

// bearerToken extracts the token from an Authorization value and checks its
// size and alphabet without decoding anything.
func bearerToken(h string) (string, error) {
	h = strings.Trim(h, " \t")
	const scheme = "Bearer"
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", ErrMissing
	}
	rest := h[len(scheme):]
	if rest == "" {
		return "", refuse(ErrMalformed, errors.New("empty token"))
	}
	if rest[0] != ' ' {
		// "Bearerfoo" or "Bearer\tfoo": not this scheme.
		return "", ErrMissing
	}
	token := strings.TrimLeft(rest, " ")
	if token == "" {
		return "", refuse(ErrMalformed, errors.New("empty token"))
	}
	if len(token) > MaxTokenSize {
		return "", refuse(ErrTooLarge, fmt.Errorf("%d bytes, limit %d", len(token), MaxTokenSize))
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
		default:
			return "", refuse(ErrMalformed, fmt.Errorf("byte %#02x at offset %d is not base64url", c, i))
		}
	}
	if dots != 2 {
		return "", refuse(ErrMalformed, fmt.Errorf("%d segments, want 3", dots+1))
	}
	return token, nil
}

// parse decodes the token and checks its signature; claims are not validated.
func (v *Verifier) parse(token string) (*Claims, error) {
	if v.onParse != nil {
		v.onParse()
	}
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, v.keyFor)
	if err == nil {
		return &Claims{m: claims}, nil
	}
	var te *TokenError
	switch {
	case errors.As(err, &te):
		// From keyFor, wrapped by the parser.
		return nil, te
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, refuse(ErrMalformed, err)
	case t != nil && !v.allowed(t.Header["alg"]):
		return nil, refuse(ErrAlgorithm, fmt.Errorf("alg %v", t.Header["alg"]))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, refuse(ErrSignature, err)
	default:
		return nil, refuse(ErrMalformed, err)
	}
}

func (v *Verifier) allowed(alg any) bool {
	s, ok := alg.(string)
	return ok && slices.Contains(v.algs, s)
}

// keyFor is the parser's Keyfunc. It runs after the parser has checked that
// the alg is in the allow-list, and checks it again so that this function
// alone decides which key verifies which algorithm.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, refuse(ErrMalformed, errors.New(`"crit" header parameter not supported`))
	}
	alg, _ := t.Header["alg"].(string)
	if !slices.Contains(v.algs, alg) || t.Method == nil || t.Method.Alg() != alg {
		return nil, refuse(ErrAlgorithm, fmt.Errorf("alg %q", alg))
	}
	var kid *string
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok {
			return nil, refuse(ErrMalformed, errors.New(`"kid" is not a string`))
		}
		kid = &s
	}
	k, err := v.keys.lookup(kid)
	if err != nil {
		return nil, err
	}
	if err := k.usableWith(alg); err != nil {
		return nil, refuse(ErrKeyMismatch, err)
	}
	return k.pub, nil
}

// validate checks the registered claims at now.
func (v *Verifier) validate(c *Claims, now time.Time) error {
	for _, name := range [...]string{"exp", "nbf", "iat"} {
		if err := checkNumericDate(c.m, name); err != nil {
			return refuse(ErrClaims, err)
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
	}
	if v.issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	if v.audience != "" {
		opts = append(opts, jwt.WithAudience(v.audience))
	}
	err := jwt.NewValidator(opts...).Validate(c.m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse(ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refuse(ErrNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refuse(ErrIssuer, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse(ErrAudience, err)
	case v.issuer != "" && !hasString(c.m, "iss"):
		return refuse(ErrIssuer, err)
	case v.audience != "" && !hasString(c.m, "aud") && !hasArray(c.m, "aud"):
		return refuse(ErrAudience, err)
	default:
		return refuse(ErrClaims, err)
	}
}

func hasString(m jwt.MapClaims, name string) bool {
	s, ok := m[name].(string)
	return ok && s != ""
}

func hasArray(m jwt.MapClaims, name string) bool {
	a, ok := m[name].([]any)
	return ok && len(a) > 0
}

// maxNumericDate is 9999-12-31T23:59:59Z. Larger or non-finite values would
// overflow time.Time in the jwt package's conversion.
const maxNumericDate = 253402300799

// checkNumericDate refuses a time claim that is present but not a finite
// number in [0, maxNumericDate]. An absent claim passes here.
func checkNumericDate(m jwt.MapClaims, name string) error {
	raw, ok := m[name]
	if !ok {
		return nil
	}
	n, ok := raw.(json.Number)
	if !ok {
		return fmt.Errorf("%q is not a number", name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return fmt.Errorf("%q = %s is out of range", name, n)
	}
	return nil
}
