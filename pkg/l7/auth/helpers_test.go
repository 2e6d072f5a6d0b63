package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// now is the fixed instant every test verifies at.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// allAlgs is every algorithm New accepts.
var allAlgs = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
}

// testKeys are generated once per test binary: RSA generation is slow
// under -race.
type testKeys struct {
	rsa, rsa2        *rsa.PrivateKey // rsa2 is the attacker's
	p256, p384, p521 *ecdsa.PrivateKey
	ed, ed2          ed25519.PrivateKey // ed2 is the attacker's
	secret           []byte             // 64 bytes, enough for HS512
}

var (
	keysOnce sync.Once
	keysVal  testKeys
)

func keys(tb testing.TB) *testKeys {
	tb.Helper()
	keysOnce.Do(func() {
		must := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		var err error
		keysVal.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		keysVal.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		keysVal.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		keysVal.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(err)
		keysVal.p521, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		must(err)
		_, keysVal.ed, err = ed25519.GenerateKey(rand.Reader)
		must(err)
		_, keysVal.ed2, err = ed25519.GenerateKey(rand.Reader)
		must(err)
		keysVal.secret = make([]byte, 64)
		_, err = rand.Read(keysVal.secret)
		must(err)
	})
	return &keysVal
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "n": enc(pub.N.Bytes()), "e": enc(big.NewInt(int64(pub.E)).Bytes())}
}

func ecJWK(kid string, pub *ecdsa.PublicKey) map[string]any {
	b, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	size := (len(b) - 1) / 2
	crv := pub.Curve.Params().Name
	return map[string]any{"kty": "EC", "kid": kid, "crv": crv, "x": enc(b[1 : 1+size]), "y": enc(b[1+size:])}
}

func edJWK(kid string, pub ed25519.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": enc(pub)}
}

func octJWK(kid string, secret []byte) map[string]any {
	return map[string]any{"kty": "oct", "kid": kid, "k": enc(secret)}
}

// with returns a copy of m with extra members.
func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func without(m map[string]any, names ...string) map[string]any {
	out := with(m)
	for _, n := range names {
		delete(out, n)
	}
	return out
}

func writeFile(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func writeJWKS(tb testing.TB, keys ...map[string]any) string {
	tb.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		tb.Fatal(err)
	}
	return writeFile(tb, "jwks.json", b)
}

// fullJWKS holds one key of every kind, each with a kid named after it.
func fullJWKS(tb testing.TB) string {
	k := keys(tb)
	return writeJWKS(tb,
		rsaJWK("rsa", &k.rsa.PublicKey),
		ecJWK("p256", &k.p256.PublicKey),
		ecJWK("p384", &k.p384.PublicKey),
		ecJWK("p521", &k.p521.PublicKey),
		edJWK("ed", k.ed.Public().(ed25519.PublicKey)),
		octJWK("oct", k.secret),
	)
}

func newVerifierT(tb testing.TB, cfg Config) *Verifier {
	tb.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	v, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

// claims are the payload of a token valid at now.
func claims(kv ...any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"iss": "https://issuer.example",
		"aud": "api",
		"exp": now.Add(time.Hour).Unix(),
		"nbf": now.Add(-time.Minute).Unix(),
		"iat": now.Add(-time.Minute).Unix(),
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
			continue
		}
		c[kv[i].(string)] = kv[i+1]
	}
	return c
}

// sign makes a token with the jwt library; hdr entries are added to the
// JOSE header (a nil value deletes the entry).
func sign(tb testing.TB, m jwt.SigningMethod, key any, hdr map[string]any, c jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(m, c)
	for k, v := range hdr {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// signRaw builds an HS256 token by hand from raw JSON, for payloads the
// jwt library would not write.
func signRaw(header, payload string, secret []byte) string {
	input := enc([]byte(header)) + "." + enc([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + enc(mac.Sum(nil))
}

func kid(s string) map[string]any { return map[string]any{"kid": s} }
