package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// ErrUnreachable is wrapped by the client's errors when the admin socket
// cannot be connected to: no lbd is running, or the socket is not ours to
// use. lbctl exits 2 on it.
var ErrUnreachable = errors.New("cannot reach lbd")

// maxAnswerBytes bounds an answer the client reads. A pool list of ten
// thousand backends is a few MiB.
const maxAnswerBytes = 64 << 20

// APIError is a refusal by the daemon: an answer with a 4xx or 5xx status.
// errors.Is matches it against ErrNotFound, ErrInvalid and ErrReload by its
// status, as the server maps them.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the daemon's reason, from the ErrorResponse body.
	Message string
}

// Error returns the daemon's reason.
func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("lbd answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// Is reports whether target is the sentinel error the status stands for.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrReload:
		return e.Status == http.StatusUnprocessableEntity
	}
	return false
}

// Client calls the admin API of a running lbd over its unix socket. Its
// methods are safe for concurrent use. Errors are an *APIError when the
// daemon refused, wrap ErrUnreachable when the socket could not be
// connected to, and describe the failure otherwise.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the admin socket at socketPath. It connects
// on each call's first use; no connection is made here.
func NewClient(socketPath string) *Client {
	dialer := &net.Dialer{}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
			}
			return conn, nil
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: transport}}
}

// Socket is the path of the admin socket the client calls.
func (c *Client) Socket() string { return c.socket }

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Pools returns every pool with its backends.
func (c *Client) Pools(ctx context.Context) ([]Pool, error) {
	var p []Pool
	err := c.do(ctx, http.MethodGet, "/v1/pools", nil, &p)
	return p, err
}

// Pool returns one pool with its backends.
func (c *Client) Pool(ctx context.Context, pool string) (Pool, error) {
	var p Pool
	err := c.do(ctx, http.MethodGet, "/v1/pools/"+url.PathEscape(pool), nil, &p)
	return p, err
}

// Backend returns one backend, as drain --wait polls it.
func (c *Client) Backend(ctx context.Context, pool, backend string) (Backend, error) {
	return c.backendCall(ctx, http.MethodGet, pool, backend, "", nil)
}

// Drain stops new connections to a backend and lets open ones finish. It
// returns the backend as it is afterwards.
func (c *Client) Drain(ctx context.Context, pool, backend string) (Backend, error) {
	return c.backendCall(ctx, http.MethodPost, pool, backend, "/drain", nil)
}

// Enable undoes Drain and Disable. It returns the backend as it is
// afterwards.
func (c *Client) Enable(ctx context.Context, pool, backend string) (Backend, error) {
	return c.backendCall(ctx, http.MethodPost, pool, backend, "/enable", nil)
}

// Disable puts a backend in maintenance: no new connections, and open ones
// are closed. It returns the backend as it is afterwards.
func (c *Client) Disable(ctx context.Context, pool, backend string) (Backend, error) {
	return c.backendCall(ctx, http.MethodPost, pool, backend, "/disable", nil)
}

// SetWeight sets a backend's weight at runtime. It returns the backend as
// it is afterwards.
func (c *Client) SetWeight(ctx context.Context, pool, backend string, weight int) (Backend, error) {
	return c.backendCall(ctx, http.MethodPut, pool, backend, "/weight", WeightRequest{Weight: weight})
}

// Reload makes the daemon re-read its config file. A rejected config is an
// *APIError with status 422 whose Message holds the problems; errors.Is
// matches it with ErrReload.
func (c *Client) Reload(ctx context.Context) (Reload, error) {
	var r Reload
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, &r)
	return r, err
}

func (c *Client) backendCall(ctx context.Context, method, pool, backend, action string, body any) (Backend, error) {
	var b Backend
	path := "/v1/pools/" + url.PathEscape(pool) + "/backends/" + url.PathEscape(backend) + action
	err := c.do(ctx, method, path, body, &b)
	return b, err
}

// do sends one request and decodes a 200 answer into out.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("admin %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	// The host is a placeholder: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://lbd"+path, rd)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			// The dial error names the socket; the URL of the
			// placeholder host would only confuse.
			if ue, ok := errors.AsType[*url.Error](err); ok {
				return ue.Err
			}
		}
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("admin %s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
			if len(e.Error) > 512 {
				e.Error = e.Error[:512] + "..."
			}
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin %s %s: decoding answer: %w", method, path, err)
	}
	return nil
}
