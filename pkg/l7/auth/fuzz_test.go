package auth

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary Authorization values to two Verifiers, one
// with the cache and one without. Neither may panic, both must agree, every
// error must be a 401 kind, and an accepted header must carry one of the
// tokens this test signed that are valid at now: nothing else can verify.
func FuzzVerify(f *testing.F) {
	k := keys(f)
	jwks := fullJWKS(f)
	cfg := Config{Algorithms: allAlgs, JWKSFile: jwks, Issuer: "https://issuer.example", Audience: "api", Leeway: 30 * time.Second}
	cached := newVerifierT(f, cfg)
	cfg.CacheSize = -1
	uncached := newVerifierT(f, cfg)

	valid := map[string]bool{}
	add := func(ok bool, tok string) {
		if ok {
			valid[tok] = true
		}
		f.Add("Bearer " + tok)
	}
	add(true, sign(f, jwt.SigningMethodRS256, k.rsa, kid("rsa"), claims()))
	add(true, sign(f, jwt.SigningMethodPS256, k.rsa, kid("rsa"), claims("aud", []string{"x", "api"})))
	add(true, sign(f, jwt.SigningMethodES256, k.p256, kid("p256"), claims()))
	add(true, sign(f, jwt.SigningMethodES512, k.p521, kid("p521"), claims()))
	add(true, sign(f, jwt.SigningMethodEdDSA, k.ed, kid("ed"), claims("sub", 12)))
	add(true, sign(f, jwt.SigningMethodHS256, k.secret, kid("oct"), claims()))
	add(false, sign(f, jwt.SigningMethodHS256, k.secret, kid("oct"), claims("exp", now.Add(-time.Hour).Unix())))
	add(false, sign(f, jwt.SigningMethodRS256, k.rsa, kid("rsa"), claims("iss", "evil")))
	add(false, sign(f, jwt.SigningMethodRS256, k.rsa2, kid("rsa"), claims()))
	add(false, sign(f, jwt.SigningMethodHS256, k.rsa.N.Bytes(), kid("rsa"), claims()))
	add(false, enc([]byte(`{"alg":"none"}`))+"."+enc([]byte(`{"exp":4102444800}`))+".")
	for _, s := range []string{
		"", "Bearer", "Bearer ", "bearer a.b.c", "Basic x", "Bearer ..", "Bearer a.b", "Bearer a.b.c.d",
		"Bearer eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer " + strings.Repeat("A", MaxTokenSize+1),
	} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, h string) {
		c1, err1 := uncached.Verify(h, now)
		c2, err2 := cached.Verify(h, now)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("cache changes the outcome: uncached %v, cached %v", err1, err2)
		}
		if err1 != nil {
			if c1 != nil || c2 != nil {
				t.Fatal("claims returned with an error")
			}
			if !errors.Is(err1, ErrMissing) && !errors.Is(err1, ErrInvalidToken) {
				t.Fatalf("error %v is neither ErrMissing nor ErrInvalidToken", err1)
			}
			return
		}
		tok, err := bearerToken(h)
		if err != nil {
			t.Fatalf("accepted a header bearerToken refuses: %v", err)
		}
		if !valid[tok] {
			t.Fatalf("accepted a token this test never signed as valid: %q", tok)
		}
		if !c1.ExpiresAt().After(now.Add(-30 * time.Second)) {
			t.Fatalf("accepted a token expired at %v", c1.ExpiresAt())
		}
	})
}

// FuzzParseJWKS checks that no JWK Set makes the loader panic, and that
// every key it keeps can serve some allowed algorithm.
func FuzzParseJWKS(f *testing.F) {
	k := keys(f)
	for _, m := range []map[string]any{
		rsaJWK("rsa", &k.rsa.PublicKey),
		ecJWK("p256", &k.p256.PublicKey),
		edJWK("ed", k.ed.Public().(ed25519.PublicKey)),
		octJWK("oct", k.secret),
	} {
		b, _ := json.Marshal(map[string]any{"keys": []any{m}})
		f.Add(b)
	}
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := parseJWKS(b, allAlgs)
		if err != nil {
			return
		}
		kept := slices.Collect(maps.Values(set.byKid))
		if set.only != nil {
			kept = append(kept, set.only)
		}
		for _, key := range kept {
			ok := false
			for _, a := range allAlgs {
				ok = ok || key.usableWith(a) == nil
			}
			if !ok {
				t.Fatalf("kept %s, usable with no algorithm", key.label)
			}
		}
	})
}
