package healthcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzReadResponse feeds arbitrary backend output to the http probe's
// parser, whole or one byte per read: it must give a verdict, never panic
// or loop, and a status it accepts is a final three-digit one.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204\r\n\r\n",
		"HTTP/1.0 503 Service Unavailable\r\n\r\ndown",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"SSH-2.0-OpenSSH_9.6\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, oneByte bool) {
		var r io.Reader = bytes.NewReader(data)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		status, _, err := readResponse(r, make([]byte, 256), 64)
		if err != nil {
			if status != 0 {
				t.Fatalf("status %d with error %v", status, err)
			}
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("error %v is not ErrMalformedResponse", err)
			}
			return
		}
		if status < 100 || status > 999 || status < 200 && status != 101 {
			t.Fatalf("accepted status %d", status)
		}
	})
}

// FuzzParseStatusLine: an accepted line starts "HTTP/1.x SSS" and the code
// returned is SSS.
func FuzzParseStatusLine(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 OK", "HTTP/1.0 404", "HTTP/1.1 999 ", "HTTP/2 200", "HTTP/1.1 099 x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		code, err := parseStatusLine(line)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(line, []byte("HTTP/1.")) || string(line[9:12]) != fmt.Sprint(code) {
			t.Fatalf("%q parsed as %d", line, code)
		}
	})
}
