package auth

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerifyEveryAlgorithm(t *testing.T) {
	k := keys(t)
	jwks := newVerifierT(t, Config{Algorithms: allAlgs, JWKSFile: fullJWKS(t), CacheSize: -1})
	secretFile := newVerifierT(t, Config{
		Algorithms:     []string{"HS256", "HS384", "HS512"},
		HMACSecretFile: writeFile(t, "secret", k.secret),
		CacheSize:      -1,
	})
	tests := []struct {
		desc   string
		v      *Verifier
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"RS256", jwks, jwt.SigningMethodRS256, k.rsa, "rsa"},
		{"RS384", jwks, jwt.SigningMethodRS384, k.rsa, "rsa"},
		{"RS512", jwks, jwt.SigningMethodRS512, k.rsa, "rsa"},
		{"PS256", jwks, jwt.SigningMethodPS256, k.rsa, "rsa"},
		{"PS384", jwks, jwt.SigningMethodPS384, k.rsa, "rsa"},
		{"PS512", jwks, jwt.SigningMethodPS512, k.rsa, "rsa"},
		{"ES256", jwks, jwt.SigningMethodES256, k.p256, "p256"},
		{"ES384", jwks, jwt.SigningMethodES384, k.p384, "p384"},
		{"ES512", jwks, jwt.SigningMethodES512, k.p521, "p521"},
		{"EdDSA", jwks, jwt.SigningMethodEdDSA, k.ed, "ed"},
		{"HS256 oct JWK", jwks, jwt.SigningMethodHS256, k.secret, "oct"},
		{"HS384 oct JWK", jwks, jwt.SigningMethodHS384, k.secret, "oct"},
		{"HS512 oct JWK", jwks, jwt.SigningMethodHS512, k.secret, "oct"},
		{"HS256 secret file", secretFile, jwt.SigningMethodHS256, k.secret, ""},
		{"HS512 secret file, kid ignored", secretFile, jwt.SigningMethodHS512, k.secret, "whatever"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			hdr := map[string]any{}
			if tt.kid != "" {
				hdr["kid"] = tt.kid
			}
			tok := sign(t, tt.method, tt.key, hdr, claims())
			c, err := tt.v.Verify("Bearer "+tok, now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if sub, ok := c.String("sub"); !ok || sub != "alice" {
				t.Errorf(`String("sub") = %q, %v; want "alice", true`, sub, ok)
			}
			if got, want := c.ExpiresAt(), now.Add(time.Hour); !got.Equal(want) {
				t.Errorf("ExpiresAt = %v, want %v", got, want)
			}
		})
	}
}

// TestVerifyRefused covers every refusal of a presented token. Each one is
// a 401 for the HTTP layer, so each must match ErrInvalidToken.
func TestVerifyRefused(t *testing.T) {
	k := keys(t)
	all := newVerifierT(t, Config{Algorithms: allAlgs, JWKSFile: fullJWKS(t), CacheSize: -1})
	rsOnly := newVerifierT(t, Config{Algorithms: []string{"RS256"}, JWKSFile: fullJWKS(t), CacheSize: -1})
	// single holds one RSA key, so a token without a kid may use it.
	single := newVerifierT(t, Config{
		Algorithms: []string{"RS256", "HS256"},
		JWKSFile:   writeJWKS(t, rsaJWK("rsa", &k.rsa.PublicKey)),
		CacheSize:  -1,
	})
	pinned := newVerifierT(t, Config{
		Algorithms: []string{"RS256", "PS256"},
		JWKSFile:   writeJWKS(t, with(rsaJWK("rsa", &k.rsa.PublicKey), "alg", "RS256")),
		CacheSize:  -1,
	})
	strict := newVerifierT(t, Config{
		Algorithms: []string{"RS256"},
		JWKSFile:   fullJWKS(t),
		Issuer:     "https://issuer.example",
		Audience:   "api",
		Leeway:     30 * time.Second,
		CacheSize:  -1,
	})

	pkix, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkixPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})
	pkcs1 := x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1})

	rs := func(hdr map[string]any, c jwt.MapClaims) string {
		return sign(t, jwt.SigningMethodRS256, k.rsa, hdr, c)
	}
	okClaims := claims()
	valid := rs(kid("rsa"), okClaims)
	parts := strings.Split(valid, ".")
	attackerJWK := rsaJWK("rsa", &k.rsa2.PublicKey)
	noneHeader := func(alg string) string { return enc([]byte(`{"alg":"` + alg + `","typ":"JWT","kid":"rsa"}`)) }
	payload := enc([]byte(`{"sub":"alice","exp":` + strconv.FormatInt(now.Add(time.Hour).Unix(), 10) + `}`))

	tests := []struct {
		desc  string
		v     *Verifier
		token string
		want  error
	}{
		// Key family and algorithm confusion.
		{"RS256 token naming the P-256 key", all, rs(kid("p256"), okClaims), ErrKeyMismatch},
		{"ES256 token naming the RSA key", all, sign(t, jwt.SigningMethodES256, k.p256, kid("rsa"), okClaims), ErrKeyMismatch},
		{"ES384 token naming the P-256 key", all, sign(t, jwt.SigningMethodES384, k.p384, kid("p256"), okClaims), ErrKeyMismatch},
		{"ES512 token naming the P-384 key", all, sign(t, jwt.SigningMethodES512, k.p521, kid("p384"), okClaims), ErrKeyMismatch},
		{"EdDSA token naming the RSA key", all, sign(t, jwt.SigningMethodEdDSA, k.ed, kid("rsa"), okClaims), ErrKeyMismatch},
		{"RS256 token naming the oct key", all, rs(kid("oct"), okClaims), ErrKeyMismatch},
		{"HS256 naming the Ed25519 key, signed with its bytes", all, sign(t, jwt.SigningMethodHS256, []byte(k.ed.Public().(ed25519.PublicKey)), kid("ed"), okClaims), ErrKeyMismatch},
		{"confusion: HS256 signed with RSA PKIX PEM, kid rsa", all, sign(t, jwt.SigningMethodHS256, pkixPEM, kid("rsa"), okClaims), ErrKeyMismatch},
		{"confusion: HS256 signed with RSA PKCS1 PEM, kid rsa", all, sign(t, jwt.SigningMethodHS256, pkcs1PEM, kid("rsa"), okClaims), ErrKeyMismatch},
		{"confusion: HS256 signed with RSA PKIX DER, kid rsa", all, sign(t, jwt.SigningMethodHS256, pkix, kid("rsa"), okClaims), ErrKeyMismatch},
		{"confusion: HS256 signed with RSA modulus, kid rsa", all, sign(t, jwt.SigningMethodHS256, k.rsa.N.Bytes(), kid("rsa"), okClaims), ErrKeyMismatch},
		{"confusion: HS256 with PEM, no kid, single RSA key", single, sign(t, jwt.SigningMethodHS256, pkixPEM, nil, okClaims), ErrKeyMismatch},
		{"confusion: HS256 with PEM, RS256-only allow-list", rsOnly, sign(t, jwt.SigningMethodHS256, pkixPEM, kid("rsa"), okClaims), ErrAlgorithm},
		{"PS256 with a key pinned to RS256", pinned, sign(t, jwt.SigningMethodPS256, k.rsa, kid("rsa"), okClaims), ErrKeyMismatch},

		// alg "none" and other algorithms off the list.
		{"alg none, empty signature", all, noneHeader("none") + "." + payload + ".", ErrAlgorithm},
		{"alg none, RS256 signature copied", all, noneHeader("none") + "." + payload + "." + parts[2], ErrAlgorithm},
		{"alg None", all, noneHeader("None") + "." + payload + ".", ErrAlgorithm},
		{"alg NONE", all, noneHeader("NONE") + "." + payload + ".", ErrAlgorithm},
		{"alg unknown", all, noneHeader("HS1") + "." + payload + "." + parts[2], ErrAlgorithm},
		{"alg lower-case rs256", all, noneHeader("rs256") + "." + payload + "." + parts[2], ErrAlgorithm},
		{"alg missing", all, enc([]byte(`{"kid":"rsa"}`)) + "." + payload + "." + parts[2], ErrAlgorithm},
		{"alg not a string", all, enc([]byte(`{"alg":256,"kid":"rsa"}`)) + "." + payload + "." + parts[2], ErrAlgorithm},
		{"ES256 on an RS256-only list", rsOnly, sign(t, jwt.SigningMethodES256, k.p256, kid("p256"), okClaims), ErrAlgorithm},

		// Key selection.
		{"unknown kid", all, rs(kid("nope"), okClaims), ErrUnknownKey},
		{"empty kid", all, rs(kid(""), okClaims), ErrUnknownKey},
		{"no kid, several keys", all, rs(nil, okClaims), ErrUnknownKey},
		{"kid not a string", all, rs(map[string]any{"kid": 7}, okClaims), ErrMalformed},
		{"attacker key, its jwk embedded, kid rsa", all, sign(t, jwt.SigningMethodRS256, k.rsa2, map[string]any{"kid": "rsa", "jwk": attackerJWK}, okClaims), ErrSignature},
		{"attacker key, its jwk embedded, no kid, single key", single, sign(t, jwt.SigningMethodRS256, k.rsa2, map[string]any{"jwk": attackerJWK}, okClaims), ErrSignature},
		{"attacker key, jku", single, sign(t, jwt.SigningMethodRS256, k.rsa2, map[string]any{"jku": "https://evil.example/jwks.json"}, okClaims), ErrSignature},
		{"attacker key, x5u", single, sign(t, jwt.SigningMethodRS256, k.rsa2, map[string]any{"x5u": "https://evil.example/cert.pem"}, okClaims), ErrSignature},
		{"attacker key, x5c", single, sign(t, jwt.SigningMethodRS256, k.rsa2, map[string]any{"x5c": []string{enc([]byte("cert"))}}, okClaims), ErrSignature},
		{"attacker Ed25519 key, jwk embedded", all, sign(t, jwt.SigningMethodEdDSA, k.ed2, map[string]any{"kid": "ed", "jwk": edJWK("ed", k.ed2.Public().(ed25519.PublicKey))}, okClaims), ErrSignature},
		{"crit header", all, rs(map[string]any{"kid": "rsa", "crit": []string{"exp"}}, okClaims), ErrMalformed},

		// Signature.
		{"payload swapped", all, parts[0] + "." + enc([]byte(`{"sub":"root","exp":4102444800}`)) + "." + parts[2], ErrSignature},
		{"signature truncated", all, parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])/4*4-4], ErrSignature},
		{"empty signature", all, parts[0] + "." + parts[1] + ".", ErrSignature},

		// Time claims; strict has a 30 s leeway.
		{"exp missing", all, rs(kid("rsa"), claims("exp", nil)), ErrClaims},
		{"exp zero", all, rs(kid("rsa"), claims("exp", 0)), ErrExpired},
		{"exp is a string", all, rs(kid("rsa"), claims("exp", "4102444800")), ErrClaims},
		{"exp beyond year 9999", all, rs(kid("rsa"), claims("exp", 1e300)), ErrClaims},
		{"exp negative", all, rs(kid("rsa"), claims("exp", -1)), ErrClaims},
		{"expired", all, rs(kid("rsa"), claims("exp", now.Add(-time.Second).Unix())), ErrExpired},
		{"exp is now", all, rs(kid("rsa"), claims("exp", now.Unix())), ErrExpired},
		{"expired past leeway", strict, rs(kid("rsa"), claims("exp", now.Add(-31*time.Second).Unix())), ErrExpired},
		{"nbf in the future", all, rs(kid("rsa"), claims("nbf", now.Add(time.Second).Unix())), ErrNotYetValid},
		{"nbf past leeway", strict, rs(kid("rsa"), claims("nbf", now.Add(31*time.Second).Unix())), ErrNotYetValid},
		{"nbf is a string", all, rs(kid("rsa"), claims("nbf", "0")), ErrClaims},

		// Issuer and audience.
		{"wrong iss", strict, rs(kid("rsa"), claims("iss", "https://evil.example")), ErrIssuer},
		{"iss missing", strict, rs(kid("rsa"), claims("iss", nil)), ErrIssuer},
		{"iss not a string", strict, rs(kid("rsa"), claims("iss", 1)), ErrIssuer},
		{"wrong aud", strict, rs(kid("rsa"), claims("aud", "other")), ErrAudience},
		{"aud array without ours", strict, rs(kid("rsa"), claims("aud", []string{"a", "b"})), ErrAudience},
		{"aud missing", strict, rs(kid("rsa"), claims("aud", nil)), ErrAudience},
		{"aud empty array", strict, rs(kid("rsa"), claims("aud", []string{})), ErrAudience},
		{"aud a number", strict, rs(kid("rsa"), claims("aud", 5)), ErrAudience},
		{"aud case differs", strict, rs(kid("rsa"), claims("aud", "API")), ErrAudience},

		// Malformed tokens.
		{"two segments", all, parts[0] + "." + parts[1], ErrMalformed},
		{"four segments", all, valid + "." + parts[2], ErrMalformed},
		{"five segments (JWE shape)", all, valid + ".a.b", ErrMalformed},
		{"many dots", all, strings.Repeat(".", 100), ErrMalformed},
		{"only dots", all, "..", ErrMalformed},
		{"one segment", all, parts[0], ErrMalformed},
		{"header not base64url", all, "*" + parts[0][1:] + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"standard base64 alphabet", all, parts[0] + "+/." + parts[1] + "." + parts[2], ErrMalformed},
		{"padding", all, parts[0] + "=." + parts[1] + "." + parts[2], ErrMalformed},
		{"header bad base64 length", all, badLen(parts[0]) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"payload bad base64 length", all, parts[0] + "." + badLen(parts[1]) + "." + parts[2], ErrMalformed},
		{"signature bad base64 length", all, parts[0] + "." + parts[1] + "." + badLen(parts[2]), ErrMalformed},
		{"header bad JSON", all, enc([]byte(`{"alg":"RS256"`)) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"header JSON array", all, enc([]byte(`["RS256"]`)) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"payload bad JSON", all, parts[0] + "." + enc([]byte(`{"exp":`)) + "." + parts[2], ErrMalformed},
		{"payload JSON array", all, parts[0] + "." + enc([]byte(`[1,2]`)) + "." + parts[2], ErrMalformed},
		{"payload JSON string", all, parts[0] + "." + enc([]byte(`"x"`)) + "." + parts[2], ErrMalformed},
		{"non-canonical base64 trailing bits", all, parts[0] + "." + parts[1] + "." + flipLastBits(parts[2]), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c, err := tt.v.Verify("Bearer "+tt.token, now)
			if err == nil {
				t.Fatalf("Verify accepted the token: claims %v", c.m)
			}
			if c != nil {
				t.Errorf("Verify returned claims with error %v", err)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Verify error = %v, want %v", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify error %v does not match ErrInvalidToken", err)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Reason != tt.want {
				t.Errorf("Verify error %v: want *TokenError with Reason %v", err, tt.want)
			}
		})
	}
}

// badLen pads s with 'A' to a length no base64 encoding has (1 mod 4).
func badLen(s string) string {
	for len(s)%4 != 1 {
		s += "A"
	}
	return s
}

// flipLastBits rewrites the last base64url character so that it keeps the
// same decoded bytes under lenient decoding but sets unused trailing bits.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last|1])
}

// TestVerifyAccepted covers the tokens at the edges that must pass.
func TestVerifyAccepted(t *testing.T) {
	k := keys(t)
	strict := newVerifierT(t, Config{
		Algorithms: []string{"RS256"},
		JWKSFile:   fullJWKS(t),
		Issuer:     "https://issuer.example",
		Audience:   "api",
		Leeway:     30 * time.Second,
		CacheSize:  -1,
	})
	single := newVerifierT(t, Config{
		Algorithms: []string{"RS256"},
		JWKSFile:   writeJWKS(t, rsaJWK("rsa", &k.rsa.PublicKey)),
		CacheSize:  -1,
	})
	noKidInSet := newVerifierT(t, Config{
		Algorithms: []string{"EdDSA"},
		JWKSFile:   writeJWKS(t, without(edJWK("", k.ed.Public().(ed25519.PublicKey)), "kid")),
		CacheSize:  -1,
	})
	rs := func(hdr map[string]any, c jwt.MapClaims) string {
		return sign(t, jwt.SigningMethodRS256, k.rsa, hdr, c)
	}
	tests := []struct {
		desc  string
		v     *Verifier
		token string
	}{
		{"exp within leeway", strict, rs(kid("rsa"), claims("exp", now.Add(-29*time.Second).Unix()))},
		{"nbf within leeway", strict, rs(kid("rsa"), claims("nbf", now.Add(29*time.Second).Unix()))},
		{"nbf absent", strict, rs(kid("rsa"), claims("nbf", nil))},
		{"iat in the future is not checked", strict, rs(kid("rsa"), claims("iat", now.Add(time.Hour).Unix()))},
		{"aud array holding ours", strict, rs(kid("rsa"), claims("aud", []string{"other", "api"}))},
		{"exp fractional", strict, rs(kid("rsa"), claims("exp", float64(now.Unix())+0.5))},
		{"no kid, single key", single, rs(nil, claims())},
		{"kid, single key", single, rs(kid("rsa"), claims())},
		{"no kid, single key without kid", noKidInSet, sign(t, jwt.SigningMethodEdDSA, k.ed, nil, claims())},
		{"jku, x5u, jwk ignored", strict, rs(map[string]any{"kid": "rsa", "jku": "https://evil.example/", "x5u": "https://evil.example/", "jwk": rsaJWK("rsa", &k.rsa2.PublicKey)}, claims())},
		{"typ absent", strict, rs(map[string]any{"kid": "rsa", "typ": nil}, claims())},
		{"no iss or aud needed when not configured", single, rs(nil, claims("iss", nil, "aud", nil))},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if _, err := tt.v.Verify("Bearer "+tt.token, now); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

// TestVerifyKidWithSingleKeyWithoutKid pins that a kid the set does not hold
// is refused even when the set has one key that a kid-less token could use.
func TestVerifyKidWithSingleKeyWithoutKid(t *testing.T) {
	k := keys(t)
	v := newVerifierT(t, Config{
		Algorithms: []string{"EdDSA"},
		JWKSFile:   writeJWKS(t, without(edJWK("", k.ed.Public().(ed25519.PublicKey)), "kid")),
	})
	_, err := v.Verify("Bearer "+sign(t, jwt.SigningMethodEdDSA, k.ed, kid("x"), claims()), now)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify error = %v, want ErrUnknownKey", err)
	}
}

// TestBearer pins the Authorization syntax (RFC 6750 §2.1, narrowed).
func TestBearer(t *testing.T) {
	k := keys(t)
	v := newVerifierT(t, Config{Algorithms: []string{"RS256"}, JWKSFile: fullJWKS(t)})
	tok := sign(t, jwt.SigningMethodRS256, k.rsa, kid("rsa"), claims())
	tests := []struct {
		desc   string
		header string
		want   error // nil: accepted
	}{
		{"canonical", "Bearer " + tok, nil},
		{"lower-case scheme", "bearer " + tok, nil},
		{"upper-case scheme", "BEARER " + tok, nil},
		{"mixed-case scheme", "bEaReR " + tok, nil},
		{"several spaces", "Bearer    " + tok, nil},
		{"surrounding OWS", " \tBearer " + tok + " \t", nil},
		{"absent", "", ErrMissing},
		{"only spaces", "   ", ErrMissing},
		{"Basic", "Basic YWxpY2U6c2VjcmV0", ErrMissing},
		{"token without scheme", tok, ErrMissing},
		{"scheme glued to token", "Bearer" + tok, ErrMissing},
		{"tab after scheme", "Bearer\t" + tok, ErrMissing},
		{"equals after scheme", "Bearer=" + tok, ErrMissing},
		{"prefix of Bearer", "Bear " + tok, ErrMissing},
		{"scheme only", "Bearer", ErrMalformed},
		{"scheme and spaces", "Bearer   ", ErrMalformed},
		{"two tokens", "Bearer " + tok + " " + tok, ErrMalformed},
		{"comma list", "Bearer " + tok + ", Basic x", ErrMalformed},
		{"trailing CRLF", "Bearer " + tok + "\r\n", ErrMalformed},
		{"NUL inside", "Bearer " + tok[:10] + "\x00" + tok[10:], ErrMalformed},
		{"quoted token", `Bearer "` + tok + `"`, ErrMalformed},
		{"auth-param form", "Bearer token=" + tok, ErrMalformed},
		{"non-ASCII", "Bearer " + tok + "é", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := v.Verify(tt.header, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if tt.want == ErrMissing && errors.Is(err, ErrInvalidToken) {
				t.Errorf("ErrMissing also matches ErrInvalidToken")
			}
		})
	}
}

// TestTokenSizeLimit proves that oversized tokens are refused before the
// parser sees them, and that the limit is exactly MaxTokenSize.
func TestTokenSizeLimit(t *testing.T) {
	k := keys(t)
	v := newVerifierT(t, Config{Algorithms: []string{"HS256"}, HMACSecretFile: writeFile(t, "s", k.secret), CacheSize: -1})
	var parses atomic.Int64
	v.onParse = func() { parses.Add(1) }

	// A valid token padded to a given length with a filler claim.
	padded := func(size int) string {
		base := sign(t, jwt.SigningMethodHS256, k.secret, nil, claims("pad", ""))
		pad := strings.Repeat("x", (size-len(base))*3/4)
		for {
			tok := sign(t, jwt.SigningMethodHS256, k.secret, nil, claims("pad", pad))
			switch {
			case len(tok) == size:
				return tok
			case len(tok) < size:
				pad += "x"
			default:
				t.Fatalf("cannot pad a token to %d bytes (got %d)", size, len(tok))
			}
		}
	}

	tests := []struct {
		desc       string
		token      string
		want       error
		wantParses int64
	}{
		{"exactly MaxTokenSize", padded(MaxTokenSize), nil, 1},
		{"valid but one byte over", padded(MaxTokenSize + 1), ErrTooLarge, 0},
		{"9 KiB of base64url garbage", strings.Repeat("A", 9<<10), ErrTooLarge, 0},
		{"9 KiB of dots", strings.Repeat(".", 9<<10), ErrTooLarge, 0},
		{"9 KiB of bytes outside the alphabet", strings.Repeat("\xff!", 9<<9), ErrTooLarge, 0},
		{"1 MiB", strings.Repeat("A.", 1<<19), ErrTooLarge, 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			parses.Store(0)
			_, err := v.Verify("Bearer "+tt.token, now)
			if tt.want == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if tt.want == ErrTooLarge && errors.Is(err, ErrMalformed) {
				t.Errorf("oversized token reported as malformed: %v", err)
			}
			if got := parses.Load(); got != tt.wantParses {
				t.Errorf("parser ran %d times, want %d", got, tt.wantParses)
			}
		})
	}
}

func TestHMACSecretFileTrimsOneNewline(t *testing.T) {
	k := keys(t)
	tests := []struct {
		desc string
		file []byte
	}{
		{"LF", append(append([]byte{}, k.secret...), '\n')},
		{"CRLF", append(append([]byte{}, k.secret...), '\r', '\n')},
		{"none", k.secret},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			v := newVerifierT(t, Config{Algorithms: []string{"HS512"}, HMACSecretFile: writeFile(t, "s", tt.file)})
			if _, err := v.Verify("Bearer "+sign(t, jwt.SigningMethodHS512, k.secret, nil, claims()), now); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestForwardHeaders(t *testing.T) {
	k := keys(t)
	v := newVerifierT(t, Config{
		Algorithms:     []string{"HS256"},
		HMACSecretFile: writeFile(t, "s", k.secret),
		ForwardClaims:  map[string]string{"sub": "x-user-id", "tenant": "X-Tenant", "email": "X-USER-EMAIL"},
	})
	got := v.ForwardHeaders()
	want := []ForwardClaim{{"tenant", "X-Tenant"}, {"email", "X-User-Email"}, {"sub", "X-User-Id"}}
	if len(got) != len(want) {
		t.Fatalf("ForwardHeaders = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ForwardHeaders[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	got[0].Header = "Host"
	if v.ForwardHeaders()[0].Header != "X-Tenant" {
		t.Error("ForwardHeaders returned the Verifier's own slice")
	}
	if v.Name() != "test" {
		t.Errorf("Name = %q", v.Name())
	}
}

func TestClaimsString(t *testing.T) {
	secret := keys(t).secret
	v := newVerifierT(t, Config{Algorithms: []string{"HS256"}, HMACSecretFile: writeFile(t, "s", secret)})
	payload := `{"exp":4102444800,` +
		`"sub":"alice","empty":"","tab":"a\tb","crlf":"a\r\nX-Admin: 1","del":"a\u007f","utf8":"zoë",` +
		`"int":42,"neg":-7,"zero":0,"negzero":-0,"float":1.5,"exp1e3":1e3,"intfloat":1000.0,"small":0.000001,` +
		`"big":12345678901234567890,"huge":1e300,"toohuge":1e400,"tiny":1e-7,` +
		`"t":true,"f":false,"null":null,"arr":["a"],"obj":{"a":1}}`
	c, err := v.Verify("Bearer "+signRaw(`{"alg":"HS256"}`, payload, secret), now)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	tests := []struct {
		name string
		want string
		ok   bool
	}{
		{"sub", "alice", true},
		{"empty", "", true},
		{"tab", "a\tb", true},
		{"crlf", "", false},
		{"del", "", false},
		{"utf8", "zoë", true},
		{"int", "42", true},
		{"neg", "-7", true},
		{"zero", "0", true},
		{"negzero", "0", true},
		{"float", "1.5", true},
		{"exp1e3", "1000", true},
		{"intfloat", "1000", true},
		{"small", "1e-06", true},
		{"big", "12345678901234567890", true},
		{"huge", "1e+300", true},
		{"toohuge", "", false},
		{"tiny", "1e-07", true},
		{"t", "true", true},
		{"f", "false", true},
		{"null", "", false},
		{"arr", "", false},
		{"obj", "", false},
		{"absent", "", false},
		{"exp", "4102444800", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := c.String(tt.name)
			if got != tt.want || ok != tt.ok {
				t.Errorf("String(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
	if c.Subject() != "alice" {
		t.Errorf("Subject = %q", c.Subject())
	}
}

// TestCache pins the verified-token cache's invariants (see cache.go).
func TestCache(t *testing.T) {
	k := keys(t)
	newV := func(size int) (*Verifier, *atomic.Int64) {
		v := newVerifierT(t, Config{
			Algorithms: []string{"RS256"},
			JWKSFile:   fullJWKS(t),
			Leeway:     10 * time.Second,
			CacheSize:  size,
		})
		var n atomic.Int64
		v.onParse = func() { n.Add(1) }
		return v, &n
	}
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, kid("rsa"), claims("exp", now.Add(time.Minute).Unix()))

	t.Run("hits skip the parser", func(t *testing.T) {
		v, parses := newV(0)
		for i := range 3 {
			if _, err := v.Verify(tok, now.Add(time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		if got := parses.Load(); got != 1 {
			t.Errorf("parser ran %d times, want 1", got)
		}
	})
	t.Run("never past exp plus leeway", func(t *testing.T) {
		v, _ := newV(0)
		if _, err := v.Verify(tok, now); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok, now.Add(time.Minute+9*time.Second)); err != nil {
			t.Fatalf("within leeway: %v", err)
		}
		if _, err := v.Verify(tok, now.Add(time.Minute+10*time.Second)); !errors.Is(err, ErrExpired) {
			t.Fatalf("at exp+leeway: error %v, want ErrExpired", err)
		}
		if n := v.cache.len(); n != 0 {
			t.Errorf("expired entry kept: %d entries", n)
		}
	})
	t.Run("hits still check nbf against the caller's clock", func(t *testing.T) {
		v, _ := newV(0)
		if _, err := v.Verify(tok, now); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(tok, now.Add(-time.Hour)); !errors.Is(err, ErrNotYetValid) {
			t.Fatalf("clock stepped back: error %v, want ErrNotYetValid", err)
		}
	})
	t.Run("refused tokens are not cached", func(t *testing.T) {
		v, parses := newV(0)
		bad := "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa2, kid("rsa"), claims())
		for range 2 {
			if _, err := v.Verify(bad, now); !errors.Is(err, ErrSignature) {
				t.Fatalf("error %v, want ErrSignature", err)
			}
		}
		if got := parses.Load(); got != 2 || v.cache.len() != 0 {
			t.Errorf("parses %d (want 2), entries %d (want 0)", got, v.cache.len())
		}
	})
	t.Run("bounded", func(t *testing.T) {
		v, _ := newV(3)
		for i := range 10 {
			tok := "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, kid("rsa"), claims("jti", strconv.Itoa(i)))
			if _, err := v.Verify(tok, now); err != nil {
				t.Fatal(err)
			}
			if n := v.cache.len(); n > 3 {
				t.Fatalf("cache holds %d entries, cap 3", n)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		v, parses := newV(-1)
		for range 3 {
			if _, err := v.Verify(tok, now); err != nil {
				t.Fatal(err)
			}
		}
		if got := parses.Load(); got != 3 || v.cache != nil {
			t.Errorf("parser ran %d times, want 3; cache %v", got, v.cache)
		}
	})
}

// TestReload shows that a new Verifier reads the JWKS again: a key removed
// from the file no longer verifies, and a cached token does not survive.
func TestReload(t *testing.T) {
	k := keys(t)
	path := writeJWKS(t, rsaJWK("old", &k.rsa.PublicKey), edJWK("new", k.ed.Public().(ed25519.PublicKey)))
	cfg := Config{Name: "corp", Algorithms: []string{"RS256", "EdDSA"}, JWKSFile: path}
	oldTok := "Bearer " + sign(t, jwt.SigningMethodRS256, k.rsa, kid("old"), claims())
	v1 := newVerifierT(t, cfg)
	if _, err := v1.Verify(oldTok, now); err != nil {
		t.Fatal(err)
	}
	rotated := writeJWKS(t, edJWK("new", k.ed.Public().(ed25519.PublicKey)))
	cfg.JWKSFile = rotated
	v2 := newVerifierT(t, cfg)
	if _, err := v2.Verify(oldTok, now); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("after rotation: error %v, want ErrUnknownKey", err)
	}
	if _, err := v2.Verify("Bearer "+sign(t, jwt.SigningMethodEdDSA, k.ed, kid("new"), claims()), now); err != nil {
		t.Fatal(err)
	}
	if _, err := v1.Verify(oldTok, now); err != nil {
		t.Fatalf("the old Verifier changed: %v", err)
	}
}

// TestConcurrentVerify runs one Verifier from many goroutines, for -race.
func TestConcurrentVerify(t *testing.T) {
	k := keys(t)
	v := newVerifierT(t, Config{Algorithms: []string{"ES256", "HS256"}, JWKSFile: fullJWKS(t), CacheSize: 4})
	var toks []string
	for i := range 8 {
		toks = append(toks, "Bearer "+sign(t, jwt.SigningMethodES256, k.p256, kid("p256"), claims("jti", strconv.Itoa(i))))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				c, err := v.Verify(toks[(g+i)%len(toks)], now)
				if err != nil {
					t.Error(err)
					return
				}
				if s, _ := c.String("sub"); s != "alice" {
					t.Errorf("sub %q", s)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkVerify(b *testing.B) {
	k := keys(b)
	jwks := fullJWKS(b)
	cases := []struct {
		alg    string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"RS256", jwt.SigningMethodRS256, k.rsa, "rsa"},
		{"PS256", jwt.SigningMethodPS256, k.rsa, "rsa"},
		{"ES256", jwt.SigningMethodES256, k.p256, "p256"},
		{"ES384", jwt.SigningMethodES384, k.p384, "p384"},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, "ed"},
		{"HS256", jwt.SigningMethodHS256, k.secret, "oct"},
	}
	for _, cached := range []bool{false, true} {
		size := -1
		prefix := ""
		if cached {
			size, prefix = 0, "cached/"
		}
		v := newVerifierT(b, Config{Algorithms: allAlgs, JWKSFile: jwks, Issuer: "https://issuer.example", Audience: "api", CacheSize: size})
		for _, c := range cases {
			tok := "Bearer " + sign(b, c.method, c.key, kid(c.kid), claims())
			b.Run(prefix+c.alg, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := v.Verify(tok, now); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
