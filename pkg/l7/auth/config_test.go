package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestNewRefuses pins every configuration New refuses, and that the error
// names the block and, where there is one, the file.
func TestNewRefuses(t *testing.T) {
	k := keys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := rsaJWK("rsa", &k.rsa.PublicKey)
	p256 := ecJWK("p256", &k.p256.PublicKey)
	ed := edJWK("ed", k.ed.Public().(ed25519.PublicKey))
	secret := writeFile(t, "secret", k.secret)
	jwks := fullJWKS(t)
	missing := filepath.Join(t.TempDir(), "nope.json")

	offCurve := with(p256, "y", p256["x"]) // (x, x) is not on P-256
	privRSA := with(rsaKey, "d", enc([]byte("private")))

	tests := []struct {
		desc string
		cfg  Config
		want string // substring of the error
		file bool   // the error must name the file
	}{
		{"empty allow-list", Config{JWKSFile: jwks}, "allow-list is empty", false},
		{"none", Config{Algorithms: []string{"RS256", "none"}, JWKSFile: jwks}, `"none" is never accepted`, false},
		{"None", Config{Algorithms: []string{"None"}, JWKSFile: jwks}, `"none" is never accepted`, false},
		{"unknown algorithm", Config{Algorithms: []string{"RS1"}, JWKSFile: jwks}, `unknown algorithm "RS1"`, false},
		{"lower-case algorithm", Config{Algorithms: []string{"rs256"}, JWKSFile: jwks}, `unknown algorithm "rs256"`, false},
		{"no key source", Config{Algorithms: []string{"RS256"}}, "one of jwks_file and hmac_secret_file is required", false},
		{"both key sources", Config{Algorithms: []string{"HS256"}, JWKSFile: jwks, HMACSecretFile: secret}, "only one of", false},
		{"secret file with RS256", Config{Algorithms: []string{"HS256", "RS256"}, HMACSecretFile: secret}, "RS256 needs a jwks_file", true},
		{"secret file missing", Config{Algorithms: []string{"HS256"}, HMACSecretFile: missing}, "no such file", true},
		{"secret empty", Config{Algorithms: []string{"HS256"}, HMACSecretFile: writeFile(t, "s", []byte("\n"))}, "secret is empty", true},
		{"secret 31 bytes", Config{Algorithms: []string{"HS256"}, HMACSecretFile: writeFile(t, "s", k.secret[:31])}, "31 bytes", true},
		{"secret 32 bytes with HS512", Config{Algorithms: []string{"HS256", "HS512"}, HMACSecretFile: writeFile(t, "s", k.secret[:32])}, "at least 64", true},
		{"negative leeway", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, Leeway: -1}, "negative", false},
		{"jwks missing", Config{Algorithms: []string{"RS256"}, JWKSFile: missing}, "no such file", true},
		{"jwks not JSON", Config{Algorithms: []string{"RS256"}, JWKSFile: writeFile(t, "j", []byte("{"))}, "not a JWK Set", true},
		{"jwks without keys", Config{Algorithms: []string{"RS256"}, JWKSFile: writeFile(t, "j", []byte(`{"kty":"RSA"}`))}, `no "keys"`, true},
		{"jwks empty", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t)}, "no key usable", true},
		{"jwks without a key for the list", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, p256, ed)}, "no key usable with algorithms RS256", true},
		{"RSA 1024 bits", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, rsaJWK("small", &small.PublicKey))}, "1024 bits", true},
		{"RSA e even", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, with(rsaKey, "e", enc([]byte{1, 0})))}, "exponent", true},
		{"RSA n missing", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, without(rsaKey, "n"))}, `"n" is missing`, true},
		{"RSA n bad base64", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, with(rsaKey, "n", "!!"))}, `"n"`, true},
		{"EC point off the curve", Config{Algorithms: []string{"ES256"}, JWKSFile: writeJWKS(t, offCurve)}, "P-256 point", true},
		{"EC short coordinate", Config{Algorithms: []string{"ES256"}, JWKSFile: writeJWKS(t, with(p256, "x", enc(make([]byte, 31))))}, "32 bytes", true},
		{"Ed25519 short", Config{Algorithms: []string{"EdDSA"}, JWKSFile: writeJWKS(t, with(ed, "x", enc(make([]byte, 31))))}, "31 bytes", true},
		{"oct short", Config{Algorithms: []string{"HS256"}, JWKSFile: writeJWKS(t, octJWK("o", k.secret[:16]))}, "16 bytes", true},
		{"oct short for its alg", Config{Algorithms: []string{"HS512"}, JWKSFile: writeJWKS(t, with(octJWK("o", k.secret[:32]), "alg", "HS512"))}, "needs 64", true},
		{"kty missing", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, without(rsaKey, "kty"))}, `"kty" is missing`, true},
		{"alg none in JWK", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, with(rsaKey, "alg", "none"))}, `"none"`, true},
		{"alg of another family", Config{Algorithms: []string{"ES256", "RS256"}, JWKSFile: writeJWKS(t, with(rsaKey, "alg", "ES256"))}, "does not fit", true},
		{"alg of another curve", Config{Algorithms: []string{"ES384", "ES256"}, JWKSFile: writeJWKS(t, with(p256, "alg", "ES384"))}, "does not fit", true},
		{"private RSA key", Config{Algorithms: []string{"RS256"}, JWKSFile: writeJWKS(t, privRSA)}, "private key material", true},
		{"duplicate kid", Config{Algorithms: []string{"RS256", "ES256"}, JWKSFile: writeJWKS(t, rsaKey, with(p256, "kid", "rsa"))}, `kid "rsa" appears twice`, true},
		{"several keys, one without kid", Config{Algorithms: []string{"RS256", "ES256"}, JWKSFile: writeJWKS(t, rsaKey, without(p256, "kid"))}, `needs a "kid" on each`, true},
		{"forward to an invalid header", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": "X User"}}, "not a valid header name", false},
		{"forward to an empty header", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": ""}}, "not a valid header name", false},
		{"forward to Authorization", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": "authorization"}}, "Authorization may not be set", false},
		{"forward to Host", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": "HOST"}}, "Host may not be set", false},
		{"forward to Transfer-Encoding", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": "transfer-encoding"}}, "Transfer-Encoding may not be set", false},
		{"forward two claims to one header", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"sub": "X-User", "email": "x-user"}}, "both set header X-User", false},
		{"forward an empty claim", Config{Algorithms: []string{"RS256"}, JWKSFile: jwks, ForwardClaims: map[string]string{"": "X-User"}}, "empty claim name", false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			tt.cfg.Name = "corp-jwt"
			v, err := New(tt.cfg)
			if err == nil {
				t.Fatalf("New accepted the config: %+v", v)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("New error %q does not contain %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, `auth "corp-jwt": `) {
				t.Errorf("New error %q does not name the block", msg)
			}
			if tt.file {
				file := tt.cfg.JWKSFile + tt.cfg.HMACSecretFile
				if !strings.Contains(msg, file) {
					t.Errorf("New error %q does not name %s", msg, file)
				}
			}
		})
	}
}

// TestJWKSSkips pins the keys a JWKS may hold that New ignores rather than
// refuses (RFC 7517 §5), and that they are then unknown to Verify.
func TestJWKSSkips(t *testing.T) {
	k := keys(t)
	p256 := ecJWK("p256", &k.p256.PublicKey)
	x25519 := map[string]any{"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": enc(make([]byte, 32))}
	k1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := writeJWKS(t,
		p256,
		with(rsaJWK("enc", &k.rsa.PublicKey), "use", "enc"),
		with(rsaJWK("wrap", &k.rsa.PublicKey), "key_ops", []string{"wrapKey"}),
		with(ecJWK("oaep", &k1.PublicKey), "alg", "ECDH-ES"),
		with(ecJWK("es384only", &k.p384.PublicKey), "alg", "ES384"),
		x25519,
		map[string]any{"kty": "secp256k1", "kid": "weird"},
		map[string]any{"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"},
		octJWK("oct", k.secret), // HS* not allowed below
		with(ecJWK("ops", &k1.PublicKey), "key_ops", []string{"sign", "verify"}, "use", "sig"),
	)
	v := newVerifierT(t, Config{Algorithms: []string{"ES256", "RS256"}, JWKSFile: jwks})
	tests := []struct {
		desc  string
		token string
		want  error
	}{
		{"kept P-256 key", sign(t, jwt.SigningMethodES256, k.p256, kid("p256"), claims()), nil},
		{"kept key with key_ops verify", sign(t, jwt.SigningMethodES256, k1, kid("ops"), claims()), nil},
		{"use enc skipped", sign(t, jwt.SigningMethodRS256, k.rsa, kid("enc"), claims()), ErrUnknownKey},
		{"key_ops without verify skipped", sign(t, jwt.SigningMethodRS256, k.rsa, kid("wrap"), claims()), ErrUnknownKey},
		{"alg ECDH-ES skipped", sign(t, jwt.SigningMethodES256, k1, kid("oaep"), claims()), ErrUnknownKey},
		{"alg off the list skipped", sign(t, jwt.SigningMethodES256, k.p256, kid("es384only"), claims()), ErrUnknownKey},
		{"oct skipped without HS*", sign(t, jwt.SigningMethodRS256, k.rsa, kid("oct"), claims()), ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := v.Verify("Bearer "+tt.token, now)
			if tt.want == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}
