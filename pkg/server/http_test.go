package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/lbd-lb/lbd/internal/conftest"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// httpBackend answers with its name and the path it saw.
func httpBackend(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s user=%s", name, r.URL.Path, r.Header.Get("X-User-Id"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestHTTPListener runs an http listener from the config: routing, JWT
// auth with forwarded claims, a rate limit, TLS, a reload that changes the
// routes and the certificate, and the lbd_http_* metrics.
func TestHTTPListener(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("0123456789abcdef0123456789abcdef")
	secretFile := filepath.Join(dir, "hmac.key")
	os.WriteFile(secretFile, secret, 0o600)
	certA, keyA := selfSigned(t, dir, "first")
	api, web := httpBackend(t, "api"), httpBackend(t, "web")
	// Listeners and the metrics endpoint bind ports the kernel chooses,
	// read back below.
	conf := func(apiPrefix, cert, key string) string {
		cf := conftest.New(t).Global("admin_socket", filepath.Join(dir, "admin.sock"), "metrics_listen", conftest.AnyPort)
		edge := cf.Listener("edge", "protocol", "http")
		edge.Route("path_prefix", apiPrefix, "pool", "api", "auth", "jwt")
		edge.Route("path_prefix", "/limited/", "pool", "web", "rate_limit", conftest.Raw(`{ rate = 1, burst = 2, key = "client_ip" }`))
		edge.Route("path_prefix", "/web/", "pool", "web")
		cf.Listener("tls", "protocol", "http", "tls_cert_file", cert, "tls_key_file", key).Route("pool", "web")
		cf.Auth("jwt", "type", "jwt", "algorithms", []string{"HS256"}, "hmac_secret_file", secretFile,
			"forward_claims", map[string]string{"sub": "X-User-Id"})
		for name, addr := range map[string]string{"api": api, "web": web} {
			p := cf.Pool(name, "algorithm", "wrr")
			p.Backend(addr)
			p.HealthCheck("type", "none")
		}
		return cf.String()
	}
	f := newReloadFixture(t, conf("/api/", certA, keyA))
	plain, secure, metricsAddr := f.s.ListenerAddr("edge"), f.s.ListenerAddr("tls"), f.s.MetricsAddr()

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(url, bearer string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		// A forged claim header: routes with auth replace it, and the
		// listener's other routes remove it.
		req.Header.Set("X-User-Id", "mallory")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	if code, body, _ := get("http://"+plain+"/web/x", ""); code != 200 || body != "web /web/x user=" {
		t.Fatalf("web: %d %q", code, body)
	}
	if code, _, _ := get("http://"+plain+"/nowhere", ""); code != 404 {
		t.Fatalf("no route: %d", code)
	}
	if code, _, h := get("http://"+plain+"/api/v", ""); code != 401 || !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("no token: %d %v", code, h)
	}
	if code, body, _ := get("http://"+plain+"/api/v", token); code != 200 || body != "api /api/v user=alice" {
		t.Fatalf("with token: %d %q", code, body)
	}
	codes := []int{}
	for i := 0; i < 3; i++ {
		code, _, h := get("http://"+plain+"/limited/", "")
		codes = append(codes, code)
		if code == 429 && h.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("rate limit: %v", codes)
	}
	resp, err := client.Get("https://" + secure + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].Subject.CommonName != "first" {
		t.Fatalf("tls: %d", resp.StatusCode)
	}

	// Reload: the api moves to /v2/ and the certificate changes; both
	// listeners keep their sockets.
	certB, keyB := selfSigned(t, dir, "second")
	f.write(conf("/v2/", certB, keyB))
	if _, err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := get("http://"+plain+"/api/v", token); code != 404 {
		t.Fatalf("old route after reload: %d", code)
	}
	if code, body, _ := get("http://"+plain+"/v2/x", token); code != 200 || body != "api /v2/x user=alice" {
		t.Fatalf("new route: %d %q", code, body)
	}
	client.CloseIdleConnections()
	resp, err = client.Get("https://" + secure + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Fatalf("certificate after reload: %s", cn)
	}

	text := scrape(t, metricsAddr)
	for _, want := range []string{
		`lbd_http_requests_total{code="200",listener="edge",route="/web/"} 1`,
		`lbd_http_rejected_total{listener="edge",reason="auth",route="/api/"} 1`,
		`lbd_http_rejected_total{listener="edge",reason="rate_limit",route="/limited/"} 1`,
		`lbd_http_rejected_total{listener="edge",reason="no_route",route=""} 2`,
		`lbd_http_requests_total{code="401",listener="edge",route="/api/"} 1`,
		`lbd_http_request_duration_seconds_count{listener="edge",route="/api/"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "lbd_http_r") && !strings.Contains(l, "bucket") {
				t.Log(l)
			}
		}
	}
}

// TestHTTPProxyHeaderAndLimit: an http listener behind a trusted load
// balancer takes the client from the PROXY header (X-Forwarded-For shows
// it), refuses connections from elsewhere, and answers 503 past
// max_connections.
func TestHTTPProxyHeaderAndLimit(t *testing.T) {
	xff := make(chan string, 4)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff <- r.Header.Get("X-Forwarded-For")
		io.WriteString(w, "ok")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cf := conftest.New(t)
	cf.Listener("edge", "protocol", "http", "accept_proxy_protocol", true, "trusted_proxies", []string{"127.0.0.1/32"},
		"max_connections", 1).Route("pool", "web")
	web := cf.Pool("web", "algorithm", "wrr")
	web.Backend(l.Addr().String())
	web.HealthCheck("type", "none")
	text := cf.String()
	f := newReloadFixture(t, text)
	front := f.s.ListenerAddr("edge")

	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: edge\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through a trusted proxy: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if got := <-xff; got != "203.0.113.9" {
		t.Fatalf("X-Forwarded-For %q, want the PROXY header's client", got)
	}
	// c is still open (keep-alive): a second connection is past
	// max_connections.
	c2, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, "PROXY TCP4 203.0.113.10 127.0.0.1 5556 80\r\nGET / HTTP/1.1\r\nHost: edge\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err == nil && resp.StatusCode != 503 {
		t.Fatalf("past max_connections: %d", resp.StatusCode)
	}
	c.Close()
	// From an untrusted address the connection is closed unserved.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		u, err := d.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		u.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(u, "PROXY TCP4 203.0.113.11 127.0.0.1 5557 80\r\nGET / HTTP/1.1\r\nHost: edge\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(u), nil)
		u.Close()
		if err == nil && resp.StatusCode == 503 && time.Now().Before(deadline) {
			continue // the first connection has not been released yet
		}
		if err == nil {
			t.Fatalf("untrusted source served: %d", resp.StatusCode)
		}
		break
	}
	select {
	case got := <-xff:
		t.Fatalf("backend reached from an untrusted source (%q)", got)
	default:
	}
	// The listener's own metrics count all of it.
	for _, m := range f.s.MetricsListeners() {
		if m.Name != "edge" {
			continue
		}
		if m.Connections < 3 || m.Rejected["max_connections"] < 1 || m.Rejected["proxy_header"] < 1 {
			t.Fatalf("listener metrics %+v", m)
		}
		return
	}
	t.Fatal("no listener metrics for the http listener")
}

// TestHTTPListenersStopTogether: at shutdown every http listener, and the
// layer-4 listeners, stop accepting at once, even while an http listener
// drains a request that outlasts the shutdown timeout.
func TestHTTPListenersStopTogether(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hold := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-release
	})}
	go hold.Serve(hl)
	t.Cleanup(func() { close(release); hold.Close() })
	quick := httpBackend(t, "quick")
	// Two listeners of each kind, so that a drain goes first in some orders
	// of the map of listeners and last in others.
	ports := make([]string, 4) // bound to ports the kernel chooses, read back below
	cf := conftest.New(t).Global("shutdown_timeout", time.Second)
	for i := range ports {
		pool := "quick"
		if i%2 == 0 {
			pool = "hold"
		}
		cf.Listener(fmt.Sprintf("l%d", i), "protocol", "http").Route("pool", pool)
	}
	// And a layer-4 listener, which must stop accepting at once too.
	cf.Listener("tcp", "protocol", "tcp", "pool", "quick")
	for name, addr := range map[string]string{"hold": hl.Addr().String(), "quick": quick} {
		p := cf.Pool(name, "algorithm", "wrr")
		p.Backend(addr)
		p.HealthCheck("type", "none")
	}
	text := cf.String()
	f := newReloadFixture(t, text)
	for i := range ports {
		ports[i] = f.s.ListenerAddr(fmt.Sprintf("l%d", i))
	}
	tcpPort := f.s.ListenerAddr("tcp")

	// A request held at the backend on each draining listener.
	for _, i := range []int{0, 2} {
		go http.Get("http://" + ports[i] + "/")
		select {
		case <-held:
		case <-time.After(5 * time.Second):
			t.Fatal("the held request did not reach its backend")
		}
	}
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		f.s.Shutdown(ctx)
		close(done)
	}()
	// Well before the shutdown timeout, no listener accepts any more.
	deadline := time.Now().Add(500 * time.Millisecond)
	for _, p := range append(ports, tcpPort) {
		for {
			c, err := net.Dial("tcp", p)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s still accepts while another listener drains", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	<-done
}
