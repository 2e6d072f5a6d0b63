package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Typed readers: a scope turns one raw value into its typed form, or
// records a FILE:LINE error and returns the default.

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
