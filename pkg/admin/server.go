package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Limits of the admin server. The socket is private to lbd's user, so these
// guard against a stuck or buggy client rather than an attacker.
const (
	// maxBodyBytes bounds a request body; the largest legal one is a
	// WeightRequest of a few bytes.
	maxBodyBytes = 64 << 10
	readTimeout  = 10 * time.Second
	// writeTimeout covers the handler too, so it leaves room for a reload
	// that re-reads the config and waits for first health probes.
	writeTimeout = 2 * time.Minute
	idleTimeout  = time.Minute
)

// Server serves the admin API over a unix socket. Close it to stop serving
// and remove the socket.
type Server struct {
	path   string
	ln     *net.UnixListener
	http   *http.Server
	socket os.FileInfo // the socket file as bound, to remove only our own
	done   chan struct{}
	log    *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Listen binds the admin socket at path with mode 0600, creating its
// directory (mode 0750) when missing, and serves c on it until Close. A
// stale socket left by a crashed lbd is replaced; a socket some process
// still accepts on, or a file that is not a socket, is an error. log may be
// nil.
func Listen(path string, c Controller, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := listenSocket(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s := &Server{
		path:   path,
		ln:     ln,
		socket: fi,
		done:   make(chan struct{}),
		log:    log,
	}
	s.http = &http.Server{
		Handler:           NewHandler(c, log),
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go s.serve()
	log.Info("admin API listening", "socket", path)
	return s, nil
}

func (s *Server) serve() {
	defer close(s.done)
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin API stopped", "socket", s.path, "err", err)
	}
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving at once, closing open admin connections, and removes
// the socket unless another process has put its own at the path since.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.http.Close()
		<-s.done
		if fi, statErr := os.Lstat(s.path); statErr == nil && os.SameFile(fi, s.socket) {
			if rmErr := os.Remove(s.path); rmErr != nil {
				err = errors.Join(err, rmErr)
			}
		}
		if err != nil {
			s.closeErr = fmt.Errorf("admin socket %s: close: %w", s.path, err)
		}
	})
	return s.closeErr
}

// route is one endpoint of the API.
type route struct {
	method, pattern string
	handle          func(r *http.Request) (any, error)
}

// NewHandler returns the admin API's HTTP handler for c, without a socket:
// Listen serves it, and tests may drive it directly. Every answer is JSON;
// errors are ErrorResponse bodies, including those for an unknown path
// (404) and a wrong method (405).
func NewHandler(c Controller, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{c: c, log: log}
	const backend = "/v1/pools/{pool}/backends/{backend}"
	routes := []route{
		{"GET", "/v1/status", h.status},
		{"GET", "/v1/pools", h.pools},
		{"GET", "/v1/pools/{pool}", h.pool},
		{"GET", backend, h.backend},
		{"POST", backend + "/drain", h.action("drain", c.Drain)},
		{"POST", backend + "/enable", h.action("enable", c.Enable)},
		{"POST", backend + "/disable", h.action("disable", c.Disable)},
		{"PUT", backend + "/weight", h.weight},
		{"POST", "/v1/reload", h.reload},
	}
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var patterns []string
	for _, rt := range routes {
		mux.Handle(rt.method+" "+rt.pattern, h.serve(rt.handle))
		if _, seen := allowed[rt.pattern]; !seen {
			patterns = append(patterns, rt.pattern)
		}
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
	}
	// A pattern without a method is less specific than one with, so these
	// catch only the methods the path does not serve.
	for _, p := range patterns {
		methods := allowed[p]
		for _, m := range methods {
			if m == http.MethodGet {
				methods = append(methods, http.MethodHead)
				break
			}
		}
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, allow))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
	return mux
}

// handler holds what the routes share.
type handler struct {
	c   Controller
	log *slog.Logger
}

// serve adapts a route's function: it bounds the body, and writes the
// returned value as a 200 or the error with its status.
func (h *handler) serve(f func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		v, err := f(r)
		if err != nil {
			code := StatusOf(err)
			if code >= 500 {
				h.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func (h *handler) status(*http.Request) (any, error) {
	return h.c.Status(), nil
}

func (h *handler) pools(*http.Request) (any, error) {
	pools := h.c.Pools()
	if pools == nil {
		pools = []Pool{} // "[]", not "null", for scripts
	}
	return pools, nil
}

func (h *handler) pool(r *http.Request) (any, error) {
	return h.c.Pool(r.PathValue("pool"))
}

func (h *handler) backend(r *http.Request) (any, error) {
	return h.c.Backend(r.PathValue("pool"), r.PathValue("backend"))
}

// action serves drain, enable and disable: it applies do and answers with
// the backend as it is afterwards.
func (h *handler) action(name string, do func(pool, backend string) error) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		pool, backend := r.PathValue("pool"), r.PathValue("backend")
		if err := do(pool, backend); err != nil {
			return nil, err
		}
		h.log.Info("admin: "+name, "pool", pool, "backend", backend)
		return h.c.Backend(pool, backend)
	}
}

func (h *handler) weight(r *http.Request) (any, error) {
	pool, backend := r.PathValue("pool"), r.PathValue("backend")
	weight, err := decodeWeight(r.Body)
	if err != nil {
		return nil, err
	}
	if err := h.c.SetWeight(pool, backend, weight); err != nil {
		return nil, err
	}
	h.log.Info("admin: weight", "pool", pool, "backend", backend, "weight", weight)
	return h.c.Backend(pool, backend)
}

func (h *handler) reload(*http.Request) (any, error) {
	res, err := h.c.Reload()
	if err != nil {
		h.log.Warn("admin: reload rejected", "err", err)
		return nil, err
	}
	h.log.Info("admin: reload", "at", res.At)
	return res, nil
}

// decodeWeight reads a WeightRequest body: one JSON object whose only field
// is an integer "weight". Anything else, a missing weight included, is an
// error wrapping ErrInvalid; a body over the limit is a *http.MaxBytesError.
func decodeWeight(body io.Reader) (int, error) {
	// A pointer tells a missing weight from a zero one.
	var req struct {
		Weight *int `json:"weight"`
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return 0, bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return 0, bodyError(err)
		}
		return 0, fmt.Errorf("%w: body: data after the JSON object", ErrInvalid)
	}
	if req.Weight == nil {
		return 0, fmt.Errorf(`%w: body: missing "weight"`, ErrInvalid)
	}
	return *req.Weight, nil
}

// bodyError wraps a body decoding error: too large stays a MaxBytesError
// for StatusOf to map to 413, anything else is ErrInvalid.
func bodyError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return fmt.Errorf("body: %w", err)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf(`%w: body: empty; want {"weight": N}`, ErrInvalid)
	}
	return fmt.Errorf("%w: body: %w", ErrInvalid, err)
}

// StatusOf is the HTTP status the admin API answers err with: 404 for
// ErrNotFound, 400 for ErrInvalid, 422 for ErrReload, 413 for a body over
// the limit, and 500 for anything else.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrReload):
		return http.StatusUnprocessableEntity
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a Controller returning unmarshalable values gets here.
		code = http.StatusInternalServerError
		body, _ = json.Marshal(ErrorResponse{Error: fmt.Sprintf("encoding answer: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}
