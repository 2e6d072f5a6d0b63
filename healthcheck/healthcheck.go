// Package healthcheck probes backends and decides, with a rise/fall state
// machine, when each one is up or down.
//
// A Checker probes a set of targets, each named by an opaque ID and an
// address, and reports every change of a target's health as an Event. It
// knows nothing of pools, balancers or the data plane: its owner (pkg/pool)
// maps IDs to backends, feeds it the data plane's passive verdicts through
// PassiveDown, and acts on the events.
//
// The rules, of [pool.health_check] (configs/lbd.example.toml):
//   - a target goes down after Fall consecutive failed probes and comes back
//     after Rise consecutive successes; alternation below either threshold
//     changes nothing;
//   - a new target (State.Known false) starts down and is probed at once, and
//     one success puts it up, so that a restart does not wait Rise × Interval
//     before serving; a failure keeps it down and the normal Rise applies;
//   - a target added with a known state (a reload carrying it over) keeps
//     that state and is first probed one interval later;
//   - PassiveDown takes a target down at once; it then needs Rise active
//     successes, or, with type "none", comes back after Interval;
//   - every target is probed every Interval with ±10% jitter, so that many
//     targets added together drift apart instead of being probed in
//     lockstep; probes start on a grid of Interval/20 (at most 100 ms), so
//     that those due close together share one wake-up of the process.
package healthcheck

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Check types, as in the type key of [pool.health_check].
const (
	// TypeTCP succeeds when a TCP connection is established within the
	// timeout.
	TypeTCP = "tcp"
	// TypeHTTP succeeds when a GET of Config.Path answers, within the
	// timeout, with a status in [ExpectStatusMin, ExpectStatusMax].
	TypeHTTP = "http"
	// TypeNone sends no probes: targets are up unless passively taken down.
	TypeNone = "none"
)

// Defaults applied by New to the zero values of Config's fields; they match
// the defaults of pkg/config.
const (
	DefaultInterval        = 2 * time.Second
	DefaultTimeout         = time.Second
	DefaultRise            = 2
	DefaultFall            = 3
	DefaultPath            = "/healthz"
	DefaultExpectStatusMin = 200
	DefaultExpectStatusMax = 399
)

// Errors returned by probes. The reason of an Event carries their text.
var (
	// ErrUnknownType is the failure of every probe of a Checker whose
	// Config.Type is not a known type: New does not fail, so that a bad
	// type shows as backends that never come up, with this reason.
	ErrUnknownType = errors.New("healthcheck: unknown check type")
	// ErrMalformedResponse means an http probe got something that is not
	// an HTTP/1.x response head.
	ErrMalformedResponse = errors.New("healthcheck: malformed HTTP response")
)

// StatusError is the failure of an http probe whose response status is
// outside the expected range.
type StatusError struct {
	Status   int
	Min, Max int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("http status %d, want %d-%d", e.Status, e.Min, e.Max)
}

// Config is one pool's [pool.health_check], already validated by pkg/config.
// New gives zero fields their defaults, so a Config{} is a tcp check every
// 2s.
type Config struct {
	// Type is TypeTCP, TypeHTTP or TypeNone. Default TypeTCP.
	Type string
	// Interval between two probes of a target, before jitter. Default 2s.
	// With TypeNone it is the time a passively failed target stays down.
	Interval time.Duration
	// Timeout bounds one whole probe: connect, and for http the request
	// and the response. Default 1s, or Interval when that is shorter. A
	// probe still running when the next one is due makes the next one be
	// skipped, so probes of one target never overlap.
	Timeout time.Duration
	// Rise is the number of consecutive successes that bring a target up.
	// Default 2.
	Rise int
	// Fall is the number of consecutive failures that take a target down.
	// Default 3.
	Fall int
	// Port, when not 0, is probed instead of the target's own port.
	Port int
	// Path is the http request path. Default "/healthz".
	Path string
	// Host is the http Host header; "" means the probed address, such as
	// "10.0.1.10:8080".
	Host string
	// ExpectStatusMin and ExpectStatusMax bound, inclusively, the http
	// statuses that count as success. Default 200-399 when both are 0.
	ExpectStatusMin, ExpectStatusMax int
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Type == "" {
		c.Type = TypeTCP
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = min(DefaultTimeout, c.Interval)
	}
	if c.Rise <= 0 {
		c.Rise = DefaultRise
	}
	if c.Fall <= 0 {
		c.Fall = DefaultFall
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.ExpectStatusMin == 0 && c.ExpectStatusMax == 0 {
		c.ExpectStatusMin, c.ExpectStatusMax = DefaultExpectStatusMin, DefaultExpectStatusMax
	}
	return c
}

// Validate reports what New would not be able to honour in c once the
// defaults are applied. pkg/config already refuses all of it; Validate is
// for other callers and tests.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch c.Type {
	case TypeTCP, TypeHTTP, TypeNone:
	default:
		return fmt.Errorf("%w %q", ErrUnknownType, c.Type)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("healthcheck: port %d out of range", c.Port)
	}
	if c.Type != TypeHTTP {
		return nil
	}
	if c.ExpectStatusMin > c.ExpectStatusMax {
		return fmt.Errorf("healthcheck: expect_status %d-%d is empty", c.ExpectStatusMin, c.ExpectStatusMax)
	}
	// Both go verbatim into the request: a space or a line break would
	// change its meaning.
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsFunc(c.Path, isSpaceOrControl) {
		return fmt.Errorf("healthcheck: path %q must start with '/' and hold no spaces or control characters", c.Path)
	}
	if strings.ContainsFunc(c.Host, isSpaceOrControl) {
		return fmt.Errorf("healthcheck: host %q must hold no spaces or control characters", c.Host)
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// Event is a change of a target's health, delivered to the onChange
// function given to New.
//
// An event is sent when Up changes, and also once when a new target's first
// probe fails: its Up is then false, as it already was, but the owner learns
// that the target is known to be down and why, so it can log it.
type Event struct {
	// ID is the target's ID as given to Add.
	ID string
	// Up is the target's new health.
	Up bool
	// Reason says why, for operators: "first probe succeeded",
	// "2 consecutive successes", "3 consecutive failures: dial tcp
	// 127.0.0.1:9: connect: connection refused", "passive: 5 consecutive
	// connect failures".
	Reason string
}

// State is a target's health as a Checker holds it. A reload reads it with
// Checker.State and hands it to the new Checker's Add so that the target
// keeps its health.
type State struct {
	// Up is whether the target is healthy.
	Up bool
	// Known is false until a probe result (or a passive verdict) decides
	// the target's health; a target that is not Known is down.
	Known bool
}
