package auth

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the payload of a verified token. They are read-only: the same
// value may be handed to many requests from the verified-token cache.
type Claims struct {
	m jwt.MapClaims // numbers are json.Number
}

// String renders the claim name as a single string, for forward_claims
// headers and "claim:NAME" rate-limit keys. Strings come back as they are,
// booleans as "true" or "false", and numbers in one canonical form whatever
// their JSON spelling: integers in plain decimal ("1e3" and "1000.0" both
// give "1000"), others in the shortest form that round-trips. It reports
// false for an absent claim, null, arrays, objects, numbers beyond float64,
// and strings holding control characters (other than tab), which could not
// travel in a header value.
func (c *Claims) String(name string) (string, bool) {
	switch v := c.m[name].(type) {
	case string:
		for i := 0; i < len(v); i++ {
			if b := v[i]; (b < 0x20 && b != '\t') || b == 0x7f {
				return "", false
			}
		}
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return canonicalNumber(v)
	}
	return "", false
}

func canonicalNumber(n json.Number) (string, bool) {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(i, 10), true
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return strconv.FormatUint(u, 10), true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", false
	}
	if f == math.Trunc(f) {
		if math.Abs(f) < 1e21 {
			if f == 0 {
				f = 0 // -0
			}
			return strconv.FormatFloat(f, 'f', -1, 64), true
		}
	}
	return strconv.FormatFloat(f, 'g', -1, 64), true
}

// Subject is the "sub" claim, or "" when it is absent or not a string.
func (c *Claims) Subject() string {
	s, _ := c.m["sub"].(string)
	return s
}

// ExpiresAt is the "exp" claim, which every verified token has.
func (c *Claims) ExpiresAt() time.Time {
	exp, err := c.m.GetExpirationTime()
	if err != nil || exp == nil {
		return time.Time{}
	}
	return exp.Time
}
