package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
)

// RSA modulus bounds. RFC 7518 §3.3 asks for 2048 bits or more; the upper
// bound keeps one verification from costing more than a few milliseconds.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// key is one verification key and what it may be used for.
type key struct {
	label  string // for errors: `kid "x"` or "key #2"
	alg    string // the JWK's own "alg", "" if absent
	family keyFamily
	curve  elliptic.Curve // familyEC only
	pub    any            // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte
}

// usableWith reports why k cannot verify a token of algorithm alg, if it
// cannot. Together with keySet.lookup it is the whole key-selection policy.
func (k *key) usableWith(alg string) error {
	info := algorithms[alg]
	switch {
	case k.alg != "" && k.alg != alg:
		return fmt.Errorf("%s is for %s, token is %s", k.label, k.alg, alg)
	case k.family != info.family:
		return fmt.Errorf("%s is %s, token alg %s needs %s", k.label, k.family, alg, info.family)
	case info.family == familyEC && k.curve != info.curve:
		return fmt.Errorf("%s is on %s, token alg %s needs %s", k.label, k.curve.Params().Name, alg, info.curve.Params().Name)
	case info.family == familyHMAC && len(k.pub.([]byte)) < info.hmacMin:
		return fmt.Errorf("%s is %d bytes, token alg %s needs %d", k.label, len(k.pub.([]byte)), alg, info.hmacMin)
	}
	return nil
}

func (f keyFamily) String() string {
	switch f {
	case familyRSA:
		return "an RSA key"
	case familyEC:
		return "an EC key"
	case familyEd25519:
		return "an Ed25519 key"
	case familyHMAC:
		return "an HMAC secret"
	}
	return "an unknown key"
}

// keySet is the immutable set of keys of one Verifier.
type keySet struct {
	byKid map[string]*key
	// only is the set's key when it holds exactly one; a token without a
	// kid may use it.
	only *key
	// secret is set for an hmac_secret_file: it is the only key and the
	// token's kid is ignored.
	secret bool
}

// lookup picks the key for a token's kid (nil when the header has none).
func (s *keySet) lookup(kid *string) (*key, error) {
	if s.secret {
		return s.only, nil
	}
	if kid != nil {
		if k, ok := s.byKid[*kid]; ok {
			return k, nil
		}
		return nil, refuse(ErrUnknownKey, fmt.Errorf("kid %q", *kid))
	}
	if s.only != nil {
		return s.only, nil
	}
	return nil, refuse(ErrUnknownKey, fmt.Errorf("token has no kid and the key set holds %d keys", len(s.byKid)))
}

func loadHMACSecret(path string, minLen int) (*keySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hmac_secret_file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("hmac_secret_file %s: the secret is empty", path)
	}
	if len(b) < minLen {
		return nil, fmt.Errorf("hmac_secret_file %s: the secret is %d bytes, the allowed HS algorithms need at least %d (RFC 7518 §3.2)", path, len(b), minLen)
	}
	k := &key{label: "hmac_secret_file", family: familyHMAC, pub: b}
	return &keySet{only: k, secret: true}, nil
}

// jwk holds the JWK members (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2) this
// package reads. Others, such as x5c, are ignored.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    *string  `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	K      string   `json:"k"`
	D      string   `json:"d"`
}

// loadJWKS reads a JWK Set and keeps the keys usable with some algorithm of
// algs. Keys meant for encryption ("use" other than "sig", or "key_ops"
// without "verify"), of a kty or crv this package does not know (RFC 7517
// §5 asks to ignore those), or whose "alg" is not allowed are skipped. A
// key it should use but cannot parse is an error, not a silent skip.
func loadJWKS(path string, algs []string) (*keySet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks_file: %w", err)
	}
	keys, err := parseJWKS(b, algs)
	if err != nil {
		return nil, fmt.Errorf("jwks_file %s: %w", path, err)
	}
	return keys, nil
}

func parseJWKS(b []byte, algs []string) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JWK Set: no "keys" member`)
	}

	families := map[keyFamily]bool{}
	for _, a := range algs {
		families[algorithms[a].family] = true
	}

	set := &keySet{byKid: map[string]*key{}}
	var all []*key
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("key #%d: %w", i, err)
		}
		label := fmt.Sprintf("key #%d", i)
		if j.Kid != nil {
			label = fmt.Sprintf("key %q", *j.Kid)
		}
		k, err := parseJWK(&j, label)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if k == nil || !families[k.family] || (k.alg != "" && !slices.Contains(algs, k.alg)) {
			continue
		}
		if j.Kid != nil {
			if _, dup := set.byKid[*j.Kid]; dup {
				return nil, fmt.Errorf("kid %q appears twice", *j.Kid)
			}
			set.byKid[*j.Kid] = k
		}
		all = append(all, k)
	}
	switch {
	case len(all) == 0:
		return nil, fmt.Errorf("no key usable with algorithms %s", strings.Join(algs, ", "))
	case len(all) == 1:
		set.only = all[0]
	case len(all) != len(set.byKid):
		return nil, errors.New(`a set with several keys needs a "kid" on each`)
	}
	return set, nil
}

// parseJWK builds the key j describes, or nil when it is to be skipped.
func parseJWK(j *jwk, label string) (*key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, nil
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return nil, nil
	}
	if j.Alg != "" {
		if strings.EqualFold(j.Alg, "none") {
			return nil, errors.New(`"alg": "none" is never accepted`)
		}
		if _, ok := algorithms[j.Alg]; !ok {
			return nil, nil // an algorithm this package does not verify
		}
	}
	if j.D != "" {
		return nil, errors.New(`holds private key material ("d"): publish only the public key`)
	}
	k := &key{label: label, alg: j.Alg}
	var err error
	switch j.Kty {
	case "RSA":
		k.family = familyRSA
		k.pub, err = rsaKey(j)
	case "EC":
		k.family = familyEC
		switch j.Crv {
		case "P-256":
			k.curve = elliptic.P256()
		case "P-384":
			k.curve = elliptic.P384()
		case "P-521":
			k.curve = elliptic.P521()
		default:
			return nil, nil
		}
		k.pub, err = ecKey(j, k.curve)
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, nil
		}
		k.family = familyEd25519
		k.pub, err = ed25519Key(j)
	case "oct":
		k.family = familyHMAC
		k.pub, err = octKey(j)
	case "":
		return nil, errors.New(`"kty" is missing`)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if k.alg != "" {
		if info := algorithms[k.alg]; info.family != k.family || (info.family == familyEC && info.curve != k.curve) {
			return nil, fmt.Errorf(`"alg" %s does not fit kty %s %s`, k.alg, j.Kty, j.Crv)
		}
		if err := k.usableWith(k.alg); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// b64 decodes a base64url JWK member, tolerating padding that some
// producers add although RFC 7515 §2 leaves it out.
func b64(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%q is missing", name)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", name, err)
	}
	return b, nil
}

func rsaKey(j *jwk) (*rsa.PublicKey, error) {
	nb, err := b64("n", j.N)
	if err != nil {
		return nil, err
	}
	eb, err := b64("e", j.E)
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("RSA modulus of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	eb = bytes.TrimLeft(eb, "\x00")
	if len(eb) > 4 {
		return nil, errors.New(`RSA exponent "e" too large`)
	}
	e := 0
	for _, c := range eb {
		e = e<<8 | int(c)
	}
	if e < 3 || e > 1<<31-1 || e%2 == 0 {
		return nil, fmt.Errorf("RSA exponent %d is invalid", e)
	}
	return &rsa.PublicKey{N: n, E: e}, nil
}

func ecKey(j *jwk, curve elliptic.Curve) (*ecdsa.PublicKey, error) {
	size := (curve.Params().BitSize + 7) / 8
	x, err := b64("x", j.X)
	if err != nil {
		return nil, err
	}
	y, err := b64("y", j.Y)
	if err != nil {
		return nil, err
	}
	// RFC 7518 §6.2.1.2: the coordinates are the full size of the field.
	if len(x) != size || len(y) != size {
		return nil, fmt.Errorf("%s coordinates must be %d bytes each, got %d and %d", j.Crv, size, len(x), len(y))
	}
	point := make([]byte, 0, 1+2*size)
	point = append(point, 4)
	point = append(point, x...)
	point = append(point, y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("%s point: %w", j.Crv, err)
	}
	return pub, nil
}

func ed25519Key(j *jwk) (ed25519.PublicKey, error) {
	x, err := b64("x", j.X)
	if err != nil {
		return nil, err
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 key is %d bytes, want %d", len(x), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(x), nil
}

func octKey(j *jwk) ([]byte, error) {
	k, err := b64("k", j.K)
	if err != nil {
		return nil, err
	}
	if least := algorithms["HS256"].hmacMin; len(k) < least {
		return nil, fmt.Errorf("oct key is %d bytes, HS256 needs at least %d (RFC 7518 §3.2)", len(k), least)
	}
	return k, nil
}
