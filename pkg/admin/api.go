// Package admin is lbd's admin API: HTTP/1.1 with JSON bodies over a unix
// socket, and the Go client that lbctl uses. The daemon side serves a
// Controller, which pkg/server implements; this package knows nothing of
// pools or loops.
package admin

import (
	"errors"
	"time"
)

// Errors a Controller returns. The server maps them to HTTP statuses:
// ErrNotFound to 404, ErrInvalid to 400, ErrReload to 422; anything else
// is a 500.
var (
	// ErrNotFound: no such pool or backend.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: a request the daemon cannot act on (a weight out of
	// range, say).
	ErrInvalid = errors.New("invalid request")
	// ErrReload: the new config was rejected; the running one is kept.
	ErrReload = errors.New("reload failed")
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version    string           `json:"version"`
	StartedAt  time.Time        `json:"started_at"`
	Uptime     string           `json:"uptime"` // Go duration syntax, rounded to seconds
	ConfigFile string           `json:"config_file"`
	LastReload *Reload          `json:"last_reload,omitempty"` // nil before the first reload
	Listeners  []ListenerStatus `json:"listeners"`
}

// Reload is the result of one reload.
type Reload struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"` // the config's FILE:LINE messages when not OK
}

// ListenerStatus is one listener in Status.
type ListenerStatus struct {
	Name              string `json:"name"`
	Bind              string `json:"bind"`
	Protocol          string `json:"protocol"`
	Pool              string `json:"pool"`
	ActiveConnections int64  `json:"active_connections"`
	TotalConnections  uint64 `json:"total_connections"`
}

// Pool is the answer of GET /v1/pools/{pool}, and an element of GET
// /v1/pools.
type Pool struct {
	Name      string    `json:"name"`
	Algorithm string    `json:"algorithm"`
	Backends  []Backend `json:"backends"`
}

// Backend is one backend of a Pool.
type Backend struct {
	Pool    string `json:"pool"`
	Name    string `json:"name"`
	Address string `json:"address"`
	// State is the operator's state: "active", "draining" or "disabled".
	State string `json:"state"`
	// Health is "up" or "down".
	Health            string `json:"health"`
	Weight            int    `json:"weight"`
	ActiveConnections int64  `json:"active_connections"`
	TotalConnections  uint64 `json:"total_connections"`
}

// WeightRequest is the body of PUT .../weight.
type WeightRequest struct {
	Weight int `json:"weight"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Controller is what the admin API drives. Errors wrap ErrNotFound,
// ErrInvalid or ErrReload where those apply. Every method is safe for
// concurrent use.
type Controller interface {
	Status() Status
	Pools() []Pool
	Pool(name string) (Pool, error)
	// Backend returns one backend, for drain --wait to poll.
	Backend(pool, backend string) (Backend, error)
	Drain(pool, backend string) error
	Enable(pool, backend string) error
	Disable(pool, backend string) error
	SetWeight(pool, backend string, weight int) error
	// Reload re-reads and applies the config file. On a rejected config it
	// returns an error wrapping ErrReload whose text holds the problems.
	Reload() (Reload, error)
}
