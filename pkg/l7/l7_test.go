package l7

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/route"
)

func TestRouting(t *testing.T) {
	mk := func(name string) *testBackend {
		return newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	}
	api, wild, tenant, def := mk("api"), mk("wild"), mk("tenant"), mk("default")
	cfg := Config{Name: "l", Routes: []Route{
		{Name: "tenant", Spec: route.Spec{Host: "api.example.com", Headers: map[string]string{"X-Tenant": "a"}}, Pool: testPool(t, "wrr", tenant.addr)},
		{Name: "api", Spec: route.Spec{Host: "api.example.com", PathPrefix: "/v1/"}, Pool: testPool(t, "wrr", api.addr)},
		{Name: "wild", Spec: route.Spec{Host: "*.example.org"}, Pool: testPool(t, "wrr", wild.addr)},
		{Name: "default", Spec: route.Spec{Host: "default.test"}, Pool: testPool(t, "wrr", def.addr)},
	}}
	s, addr := startServer(t, cfg)
	c := &http.Client{}
	for _, tc := range []struct {
		desc, host, path string
		hdr              map[string]string
		code             int
		body             string
	}{
		{"header route first", "api.example.com", "/v1/x", map[string]string{"X-Tenant": "a"}, 200, "tenant"},
		{"path prefix", "API.example.com:8080", "/v1/users", nil, 200, "api"},
		{"wrong header value", "api.example.com", "/v1/", map[string]string{"X-Tenant": "b"}, 200, "api"},
		{"path miss", "api.example.com", "/v2/", nil, 404, ""},
		{"wildcard", "a.b.example.org", "/", nil, 200, "wild"},
		{"wildcard apex", "example.org", "/", nil, 404, ""},
		{"dot segments normalised", "api.example.com", "/v2/../v1/a", nil, 200, "api"},
		{"unknown host", "nope.test", "/", nil, 404, ""},
	} {
		hdr := map[string]string{"Host": tc.host}
		for k, v := range tc.hdr {
			hdr[k] = v
		}
		resp, body := get(t, c, "http://"+addr+tc.path, hdr)
		if resp.StatusCode != tc.code || (tc.body != "" && body != tc.body) {
			t.Errorf("%s: got %d %q, want %d %q", tc.desc, resp.StatusCode, body, tc.code, tc.body)
		}
	}
	st := s.Stats()
	if st.Rejected[ReasonNoRoute] != 3 {
		t.Errorf("no_route = %d, want 3", st.Rejected[ReasonNoRoute])
	}
	if st.Routes[1].Name != "api" || st.Routes[1].Requests[200] != 3 || st.Routes[1].Duration.Count != 3 {
		t.Errorf("api stats = %+v", st.Routes[1])
	}
}

func TestProxyBasics(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Resp", "yes")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		echoHeaders(w, r)
		w.WriteHeader(201)
		echoBody(w, r)
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	body := "line1\r\n\x00\xffbinary\n"
	req, _ := http.NewRequest("POST", "http://"+addr+"/p/a?x=1&y=%20z", strings.NewReader(body))
	req.Header.Set("X-Custom", "v")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("X-Resp") != "yes" || len(resp.Header.Values("Set-Cookie")) != 2 {
		t.Errorf("response %d %v", resp.StatusCode, resp.Header)
	}
	if want := "POST /p/a?x=1&y=%20z\n" + body; string(got) != want {
		t.Errorf("body %q, want %q", got, want)
	}
	if resp.Header.Get("X-Got-X-Custom") != "v" {
		t.Errorf("custom header not forwarded: %v", resp.Header)
	}
}

func TestHopByHop(t *testing.T) {
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		echoHandler(w, r)
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n"+
		"X-Secret: s\r\nKeep-Alive: 1\r\nProxy-Connection: x\r\nTE: trailers\r\nProxy-Authorization: p\r\nTrailer: t\r\nX-Keep: k\r\n\r\n")
	for _, h := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Connection", "Te", "Proxy-Authorization", "Trailer"} {
		if v := resp.Header.Get("X-Got-" + h); v != "" {
			t.Errorf("backend got %s: %q", h, v)
		}
	}
	if resp.Header.Get("X-Got-X-Keep") != "k" {
		t.Errorf("end-to-end header lost")
	}
	for _, h := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("client got %s: %q", h, v)
		}
	}
}

func TestXForwarded(t *testing.T) {
	be := newBackend(t, echoHandler)
	p := testPool(t, "wrr", be.addr)
	forged := "GET / HTTP/1.1\r\nHost: front.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n"
	t.Run("untrusted", func(t *testing.T) {
		_, addr := startServer(t, Config{Routes: simpleRoutes(p)})
		resp, _, _ := rawExchange(t, addr, forged)
		if got := resp.Header.Values("X-Got-X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("XFF %q", got)
		}
		if resp.Header.Get("X-Got-X-Forwarded-Proto") != "http" || resp.Header.Get("X-Got-X-Forwarded-Host") != "front.test" {
			t.Errorf("proto/host %v", resp.Header)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		_, addr := startServer(t, Config{Routes: simpleRoutes(p), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		resp, _, _ := rawExchange(t, addr, forged)
		if got := resp.Header.Get("X-Got-X-Forwarded-For"); got != "6.6.6.6, 127.0.0.1" {
			t.Errorf("XFF %q", got)
		}
		if resp.Header.Get("X-Got-X-Forwarded-Proto") != "https" || resp.Header.Get("X-Got-X-Forwarded-Host") != "evil" {
			t.Errorf("proto/host %v", resp.Header)
		}
	})
}

func TestAuth(t *testing.T) {
	f := newAuthFixture(t, "X-User")
	good := f.aliceToken()
	expired := f.sign(jwt.MapClaims{"sub": "alice", "exp": f.now.Add(-time.Hour).Unix()})
	be, addr := f.be, f.addr
	for _, tc := range []struct {
		desc, authz string
		code        int
	}{
		{"missing", "", 401},
		{"expired", "Bearer " + expired, 401},
		{"garbage", "Bearer a.b.c", 401},
		{"basic", "Basic YTpi", 401},
		{"good", "Bearer " + good, 200},
	} {
		hdr := map[string]string{"X-User": "mallory"}
		if tc.authz != "" {
			hdr["Authorization"] = tc.authz
		}
		before := be.requests.Load()
		resp, _ := get(t, http.DefaultClient, "http://"+addr+"/", hdr)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", tc.desc, resp.StatusCode, tc.code)
		}
		if tc.code == 401 {
			if resp.Header.Get("WWW-Authenticate") != auth.Challenge {
				t.Errorf("%s: challenge %q", tc.desc, resp.Header.Get("WWW-Authenticate"))
			}
			if be.requests.Load() != before {
				t.Errorf("%s: reached the backend", tc.desc)
			}
		} else if got := resp.Header.Values("X-Got-X-User"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("forwarded claim %q", got)
		}
	}
}

func TestRateLimit(t *testing.T) {
	be := newBackend(t, echoHandler)
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	key, _ := ratelimit.ParseKey("header:X-Key")
	s, addr := startServer(t, Config{Now: clock, Routes: []Route{{Name: "r", Pool: testPool(t, "wrr", be.addr),
		Limit: ratelimit.New(0.5, 2), LimitKey: key}}})
	code := func(k string) (int, string) {
		hdr := map[string]string{}
		if k != "" {
			hdr["X-Key"] = k
		}
		resp, _ := get(t, http.DefaultClient, "http://"+addr+"/", hdr)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i, want := range []int{200, 200, 429} {
		if c, ra := code("a"); c != want || (c == 429 && ra != "2") {
			t.Errorf("a #%d: %d Retry-After %q, want %d", i, c, ra, want)
		}
	}
	if c, _ := code("b"); c != 200 {
		t.Errorf("key b isolated: %d", c)
	}
	// Missing header falls back to the client IP: its own bucket.
	for i, want := range []int{200, 200, 429} {
		if c, _ := code(""); c != want {
			t.Errorf("no key #%d: %d, want %d", i, c, want)
		}
	}
	advance(2 * time.Second)
	if c, _ := code("a"); c != 200 {
		t.Errorf("after refill: %d", c)
	}
	if n := s.Stats().Rejected[ReasonRateLimit]; n != 2 {
		t.Errorf("rate_limit rejections %d", n)
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	be := newBackend(t, echoHandler)
	dead := deadAddr(t)
	p := testPool(t, "wrr", dead, be.addr)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), Retries: 1})
	c := &http.Client{}
	for i := 0; i < 10; i++ {
		if resp, _ := get(t, c, "http://"+addr+"/", nil); resp.StatusCode != 200 {
			t.Fatalf("GET #%d: %d", i, resp.StatusCode)
		}
	}
	// A POST is retried too, on a connect failure only: it never left,
	// so it cannot happen twice. Small and streamed bodies alike arrive
	// whole.
	for _, body := range []string{"x", strings.Repeat("0123456789abcdef", 4096)} {
		for i := 0; i < 10; i++ {
			resp, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasSuffix(string(got), body) {
				t.Errorf("POST of %d bytes: %d, %d bytes back", len(body), resp.StatusCode, len(got))
			}
		}
	}
	var errs uint64
	for _, b := range p.Backends() {
		_, e, _, _ := b.Totals()
		errs += e
	}
	if errs == 0 {
		t.Errorf("connect errors not counted")
	}
}

func TestBackendReset502(t *testing.T) {
	ln := listenRaw(t, func(c rawConn) {
		buf := make([]byte, 4096)
		c.Read(buf)
		c.SetLinger(0)
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", ln))})
	resp, _ := get(t, http.DefaultClient, "http://"+addr+"/", nil)
	if resp.StatusCode != 502 {
		t.Errorf("got %d, want 502", resp.StatusCode)
	}
}

func TestNoBackend503(t *testing.T) {
	be := newBackend(t, echoHandler)
	p := testPool(t, "wrr", be.addr)
	if err := p.Drain(p.Backends()[0]); err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	resp, _ := get(t, http.DefaultClient, "http://"+addr+"/", nil)
	if resp.StatusCode != 503 {
		t.Errorf("got %d, want 503", resp.StatusCode)
	}
}

func TestUpgradeRefused(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	for _, tc := range []struct {
		desc, upgrade string
		code          int
	}{{"h2c", "h2c", 400}, {"another protocol", "irc/6.9", 501}} {
		resp, _, c := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: "+tc.upgrade+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		if resp.StatusCode != tc.code || !closedAfter(c) {
			t.Errorf("%s: %d, want %d and close", tc.desc, resp.StatusCode, tc.code)
		}
	}
	if be.requests.Load() != 0 {
		t.Errorf("backend saw an upgrade")
	}
}

func TestKeepAliveToBackend(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	for i := 0; i < 20; i++ {
		// A new client connection each time: the backend connection is
		// still reused.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, _ := get(t, c, "http://"+addr+"/", nil); resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 20 sequential requests, want 1", n)
	}
	if n := be.requests.Load(); n != 20 {
		t.Errorf("backend saw %d requests", n)
	}
}

func TestPipelining(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	var req string
	for i := 0; i < 5; i++ {
		req += fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
	}
	resp, body, c := rawExchange(t, addr, req)
	for i := 0; ; i++ {
		if want := fmt.Sprintf("GET /%d\n", i); resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
		if i == 4 {
			break
		}
		var err error
		resp, err = http.ReadResponse(c.(*bufConn).r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
}

func TestUpdateSwapsRoutes(t *testing.T) {
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") })
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	s, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", a.addr))})
	if _, body := get(t, http.DefaultClient, "http://"+addr+"/", nil); body != "a" {
		t.Fatalf("got %q", body)
	}
	if err := s.Update(limited(Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr))})); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, http.DefaultClient, "http://"+addr+"/", nil); body != "b" {
		t.Fatalf("after update got %q", body)
	}
	if err := s.Update(limited(Config{Routes: []Route{{Name: "x"}}})); err == nil {
		t.Errorf("route without pool accepted")
	}
}

// TestBackendClosesIdle: a backend that closes each keep-alive connection
// after one answer, without saying so, as one whose keep-alive timeout ran
// out does. The pooled connection fails before any answer byte and a GET is
// sent again on a new one; the client sees every answer.
func TestBackendClosesIdle(t *testing.T) {
	var conns atomic.Int32
	ln := listenRaw(t, func(c rawConn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", ln))})
	client := &http.Client{}
	// Eight at once leave eight pooled connections, all closed by the
	// backend: each request below meets stale ones first.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := c.Get("http://" + addr + "/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("warm-up: %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	for i := range 5 {
		resp, body := get(t, client, "http://"+addr+"/", nil)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n < 13 {
		t.Errorf("the backend saw %d connections for 13 requests", n)
	}
	// A POST is not sent again: on the stale connection the last GET
	// left, it gets 502.
	resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 {
		t.Errorf("POST on a stale connection: %d, want 502", resp.StatusCode)
	}
}

// TestBackendLingeringClose: a backend that ends an idle keep-alive
// connection by half-closing it and draining (a lingering close) sends no
// reset in answer to a request on it; the next GET must still be answered
// at once, on a new connection.
func TestBackendLingeringClose(t *testing.T) {
	var conns atomic.Int32
	lingered := make(chan struct{})
	ln := listenRaw(t, func(c rawConn) {
		n := conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n == 1 {
				c.CloseWrite()
				close(lingered)
				io.Copy(io.Discard, c)
				return
			}
		}
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", ln)), ReadTimeout: 5 * time.Second})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, _ := get(t, client, "http://"+addr+"/", nil); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	<-lingered
	// The pooled connection sits idle past fuseWindow: the condition under
	// test, not a wait for something to happen.
	time.Sleep(2 * fuseWindow)
	start := time.Now()
	resp, body := get(t, client, "http://"+addr+"/", nil)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("second request: %d %q", resp.StatusCode, body)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("second request took %v", el)
	}
}

// TestLimitsRequired: l7 has no defaults of its own; a Config that leaves a
// limit at zero is refused, naming it.
func TestLimitsRequired(t *testing.T) {
	full := limited(Config{Name: "l"})
	for _, tc := range []struct {
		desc  string
		unset func(*Config)
		want  string
	}{
		{"header timeout", func(c *Config) { c.HeaderTimeout = 0 }, "header timeout not set"},
		{"idle timeout", func(c *Config) { c.IdleTimeout = 0 }, "idle timeout not set"},
		{"connect timeout", func(c *Config) { c.ConnectTimeout = 0 }, "connect timeout not set"},
		{"max body bytes", func(c *Config) { c.MaxBodyBytes = 0 }, "max body bytes not set"},
		{"IPv6 prefix", func(c *Config) { c.SourcePrefixV6 = 129 }, "IPv6 source prefix not set"},
	} {
		c := full
		tc.unset(&c)
		_, err := New(c, nil)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want ErrConfig with %q", tc.desc, err, tc.want)
		}
	}
	if _, err := New(full, nil); err != nil {
		t.Fatalf("New with every limit: %v", err)
	}
}
