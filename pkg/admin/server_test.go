package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/admin/admintest"
)

// rawClient speaks HTTP to the admin socket at path without the admin
// client, to send what the client never would.
func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func rawDo(t *testing.T, hc *http.Client, method, path, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://lbd"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, data}
}

// TestRoutes pins every route of the admin API (docs/reference.md)
// that drain --wait polls, with the status each outcome maps to.
func TestRoutes(t *testing.T) {
	const b = "/v1/pools/web/backends/web-1"
	tests := []struct {
		desc         string
		method, path string
		body         string
		code         int
		want         string // a substring of the answer's body
	}{
		{"status", "GET", "/v1/status", "", 200, `"config_file":"/etc/lbd/lbd.toml"`},
		{"pools", "GET", "/v1/pools", "", 200, `"name":"db"`},
		{"pool", "GET", "/v1/pools/web", "", 200, `"algorithm":"wrr"`},
		{"pool unknown", "GET", "/v1/pools/nope", "", 404, `{"error":"pool \"nope\": not found"}`},
		{"backend", "GET", b, "", 200, `"address":"10.0.1.1:8080"`},
		{"backend by address", "GET", "/v1/pools/web/backends/10.0.1.3:8080", "", 200, `"health":"down"`},
		{"backend unknown", "GET", "/v1/pools/web/backends/nope", "", 404, `backend \"nope\": not found`},
		{"backend in unknown pool", "GET", "/v1/pools/nope/backends/web-1", "", 404, `pool \"nope\": not found`},
		{"drain", "POST", b + "/drain", "", 200, `"state":"draining"`},
		{"drain unknown", "POST", "/v1/pools/web/backends/nope/drain", "", 404, `not found`},
		{"disable", "POST", b + "/disable", "", 200, `"state":"disabled"`},
		{"enable", "POST", b + "/enable", "", 200, `"state":"active"`},
		{"enable unknown pool", "POST", "/v1/pools/nope/backends/web-1/enable", "", 404, `not found`},
		{"disable unknown", "POST", "/v1/pools/db/backends/web-1/disable", "", 404, `not found`},
		{"weight", "PUT", b + "/weight", `{"weight": 7}`, 200, `"weight":7`},
		{"weight with spaces", "PUT", b + "/weight", " {\"weight\":8}\n ", 200, `"weight":8`},
		{"weight out of range", "PUT", b + "/weight", `{"weight": 0}`, 400, `out of range`},
		{"weight unknown backend", "PUT", "/v1/pools/web/backends/nope/weight", `{"weight": 5}`, 404, `not found`},
		{"weight empty body", "PUT", b + "/weight", "", 400, `empty`},
		{"weight bad JSON", "PUT", b + "/weight", `{"weight": `, 400, `invalid request`},
		{"weight not a number", "PUT", b + "/weight", `{"weight": "5"}`, 400, `invalid request`},
		{"weight fraction", "PUT", b + "/weight", `{"weight": 1.5}`, 400, `invalid request`},
		{"weight unknown field", "PUT", b + "/weight", `{"weight": 5, "extra": 1}`, 400, `unknown field`},
		{"weight missing", "PUT", b + "/weight", `{}`, 400, `missing \"weight\"`},
		{"weight null", "PUT", b + "/weight", `{"weight": null}`, 400, `missing \"weight\"`},
		{"weight trailing data", "PUT", b + "/weight", `{"weight": 5} {}`, 400, `data after`},
		{"weight too large a body", "PUT", b + "/weight", `{"weight": 5` + strings.Repeat(" ", 70<<10) + `}`, 413, `too large`},
		{"reload", "POST", "/v1/reload", "", 200, `"ok":true`},
		{"status wrong method", "POST", "/v1/status", "", 405, `method POST not allowed`},
		{"drain wrong method", "GET", b + "/drain", "", 405, `use POST`},
		{"weight wrong method", "POST", b + "/weight", `{"weight": 5}`, 405, `use PUT`},
		{"reload wrong method", "GET", "/v1/reload", "", 405, `use POST`},
		{"unknown path", "GET", "/v2/status", "", 404, `no such endpoint: /v2/status`},
		{"unknown action", "POST", b + "/explode", "", 404, `no such endpoint`},
		{"root", "GET", "/", "", 404, `no such endpoint`},
	}
	hc := rawClient(admintest.Serve(t, admintest.Sample()))
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			a := rawDo(t, hc, tt.method, tt.path, tt.body)
			if a.code != tt.code {
				t.Errorf("status %d, want %d; body %s", a.code, tt.code, a.body)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if !json.Valid(a.body) {
				t.Errorf("body is not JSON: %s", a.body)
			}
			if !strings.Contains(string(a.body), tt.want) {
				t.Errorf("body %s does not contain %s", a.body, tt.want)
			}
			if a.code >= 400 {
				var e admin.ErrorResponse
				if err := json.Unmarshal(a.body, &e); err != nil || e.Error == "" {
					t.Errorf("error body %s is not an ErrorResponse (%v)", a.body, err)
				}
			}
			if a.code == 405 && a.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
}

func TestReloadRejected(t *testing.T) {
	c := admintest.Sample()
	c.FailReloads("lbd.toml:12: pool \"web\": unknown algorithm \"rnd\"")
	hc := rawClient(admintest.Serve(t, c))
	a := rawDo(t, hc, "POST", "/v1/reload", "")
	if a.code != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422; body %s", a.code, a.body)
	}
	var e admin.ErrorResponse
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatal(err)
	}
	if want := `reload failed: lbd.toml:12: pool "web": unknown algorithm "rnd"`; e.Error != want {
		t.Errorf("error %q, want %q", e.Error, want)
	}
}

// failing is a Controller whose changes fail for reasons the API has no
// status for.
type failing struct{ *admintest.Controller }

func (failing) Drain(string, string) error { return errors.New("event loop gone") }

func TestUnmappedErrorIs500(t *testing.T) {
	hc := rawClient(admintest.Serve(t, failing{admintest.Sample()}))
	a := rawDo(t, hc, "POST", "/v1/pools/web/backends/web-1/drain", "")
	if a.code != 500 || !strings.Contains(string(a.body), `{"error":"event loop gone"}`) {
		t.Errorf("got %d %s, want 500 with the error", a.code, a.body)
	}
}

func TestEmptyPoolsIsAnArray(t *testing.T) {
	hc := rawClient(admintest.Serve(t, admintest.New(admin.Status{}, nil)))
	a := rawDo(t, hc, "GET", "/v1/pools", "")
	if got := strings.TrimSpace(string(a.body)); a.code != 200 || got != "[]" {
		t.Errorf("got %d %s, want 200 []", a.code, got)
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		desc string
		err  error
		want int
	}{
		{"not found", admin.ErrNotFound, 404},
		{"wrapped not found", errWrap("pool", admin.ErrNotFound), 404},
		{"invalid", errWrap("weight", admin.ErrInvalid), 400},
		{"reload", errWrap("file", admin.ErrReload), 422},
		{"too large", &http.MaxBytesError{Limit: 1}, 413},
		{"other", errors.New("boom"), 500},
	}
	for _, tt := range tests {
		if got := admin.StatusOf(tt.err); got != tt.want {
			t.Errorf("%s: StatusOf = %d, want %d", tt.desc, got, tt.want)
		}
	}
}

func errWrap(ctx string, err error) error { return errors.Join(errors.New(ctx), err) }

func TestSocketModeAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "lbd")
	path := filepath.Join(dir, "admin.sock")
	s, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want 0750", di.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only the socket", entries)
	}
	if _, err := admin.NewClient(path).Status(context.Background()); err != nil {
		t.Errorf("Status over the socket: %v", err)
	}
}

// TestSocketModeLongPath covers a path too long to bind in a temporary
// directory beside it, which is bound in place.
func TestSocketModeLongPath(t *testing.T) {
	base := t.TempDir()
	const name = "a.sock"
	pad := 105 - len(base) - 2 - len(name)
	if pad < 1 {
		t.Skipf("temporary directory %s too long for this test", base)
	}
	dir := filepath.Join(base, strings.Repeat("d", pad))
	path := filepath.Join(dir, name)
	if len(path) != 105 {
		t.Fatalf("path length %d", len(path))
	}
	s, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode())
	}
	if _, err := admin.NewClient(path).Status(context.Background()); err != nil {
		t.Errorf("Status over the socket: %v", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), strings.Repeat("s", 120))
	if _, err := admin.Listen(path, admintest.Sample(), nil); err == nil {
		t.Fatal("Listen on a path longer than sun_path succeeded")
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	// A crashed lbd leaves its socket file behind with nobody accepting.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	s, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer s.Close()
	if _, err := admin.NewClient(path).Status(context.Background()); err != nil {
		t.Errorf("Status over the new socket: %v", err)
	}
}

func TestLiveSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	first, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = admin.Listen(path, admintest.Sample(), nil)
	if err == nil || !strings.Contains(err.Error(), "another lbd is serving "+path) {
		t.Fatalf("second Listen: %v, want another lbd is serving", err)
	}
	// The first server is untouched.
	if _, err := admin.NewClient(path).Status(context.Background()); err != nil {
		t.Errorf("first server after the refused Listen: %v", err)
	}
}

func TestNonSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := admin.Listen(path, admintest.Sample(), nil)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v, want not a socket", err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "not a socket" {
		t.Errorf("the file was changed: %q, %v", data, err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	s, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if _, err := admin.NewClient(path).Status(context.Background()); !errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("Status after Close: %v, want ErrUnreachable", err)
	}
}

// TestCloseKeepsSuccessor: a server that lost its path to a newer one (its
// socket removed and another bound there) does not remove the newer one.
func TestCloseKeepsSuccessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	old, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	cur, err := admin.Listen(path, admintest.Sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.NewClient(path).Status(context.Background()); err != nil {
		t.Errorf("newer server after the old one closed: %v", err)
	}
}

// FuzzWeightBody: no body makes the weight endpoint fail with a 5xx or
// panic, every answer is JSON, and a 200 carries the weight sent.
func FuzzWeightBody(f *testing.F) {
	for _, s := range []string{
		`{"weight": 5}`, `{"weight": 0}`, `{"weight": -1}`, `{"weight": 1e3}`,
		`{"weight": 99999999999999999999}`, `{"weight": null}`, `{}`, `[]`, `null`,
		`{"weight": 5, "weight": 6}`, `{"Weight": 5}`, `{"weight": "5"}`, ``, `{`,
		`{"weight": 5}{"weight": 6}`, "\x00", `{"weight": 5, "x": {}}`,
	} {
		f.Add([]byte(s))
	}
	h := admin.NewHandler(admintest.Sample(), nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("PUT", "/v1/pools/web/backends/web-1/weight", strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("body %q: answer is not JSON: %s", body, rec.Body)
		}
		if rec.Code == 200 {
			var sent struct{ Weight int }
			var got admin.Backend
			if err := json.Unmarshal(body, &sent); err != nil {
				t.Fatalf("body %q accepted but does not decode: %v", body, err)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Weight != sent.Weight {
				t.Fatalf("body %q: answer %s, want weight %d", body, rec.Body, sent.Weight)
			}
		}
	})
}
