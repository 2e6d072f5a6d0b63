package healthcheck

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// respHead is what a probe needs of a response head.
type respHead struct {
	status        int
	contentLength int64 // -1 when absent
	chunked       bool
}

// readResponse reads one HTTP/1.x response from r, skipping interim (1xx)
// responses, and returns the final status. The head must fit in buf. Then
// it reads the body until its end, the connection's end, or maxBody bytes,
// whichever comes first, so that a backend that answers normally has
// finished writing before the probe closes; the body's content and any
// error reading it do not matter, since the status has decided. eof
// reports that the backend closed the connection.
func readResponse(r io.Reader, buf []byte, maxBody int) (status int, eof bool, err error) {
	rr := respReader{r: r, buf: buf}
	for {
		end := headEnd(rr.buf[:rr.n])
		for end < 0 {
			if rr.n == len(rr.buf) {
				return 0, rr.eof, fmt.Errorf("%w: head longer than %d bytes", ErrMalformedResponse, len(rr.buf))
			}
			if err := rr.fill(); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%w: connection closed after %d bytes of head", ErrMalformedResponse, rr.n)
				}
				return 0, rr.eof, err
			}
			end = headEnd(rr.buf[:rr.n])
		}
		h, err := parseHead(rr.buf[:end])
		if err != nil {
			return 0, rr.eof, err
		}
		rr.n = copy(rr.buf, rr.buf[end:rr.n])
		if h.status >= 100 && h.status < 200 && h.status != 101 {
			continue // 100 Continue, 103 Early Hints: the final response follows
		}
		rr.drainBody(h, maxBody)
		return h.status, rr.eof, nil
	}
}

// respReader holds the bytes read so far, buf[:n].
type respReader struct {
	r   io.Reader
	buf []byte
	n   int
	eof bool
}

// fill reads more bytes after buf[:n], which must not be full. It returns
// io.EOF once the peer has closed and nothing more came.
func (rr *respReader) fill() error {
	if rr.eof {
		return io.EOF
	}
	m, err := rr.r.Read(rr.buf[rr.n:])
	rr.n += m
	if errors.Is(err, io.EOF) {
		rr.eof = true
	}
	if m > 0 {
		return nil
	}
	if err == nil {
		return io.ErrNoProgress // a Reader must not return 0, nil; stop rather than spin
	}
	return err
}

// lastChunk ends a chunked body without trailers.
var lastChunk = []byte("0\r\n\r\n")

// drainBody reads and discards the body that follows h, of which buf[:n]
// already holds the start, up to maxBody bytes in all.
func (rr *respReader) drainBody(h respHead, maxBody int) {
	if h.status == 204 || h.status == 304 || h.contentLength == 0 {
		return
	}
	want := int64(maxBody)
	if h.contentLength > 0 && !h.chunked {
		want = min(want, h.contentLength)
	}
	got := int64(rr.n)
	for got < want && !(h.chunked && bytes.HasSuffix(rr.buf[:rr.n], lastChunk)) {
		if rr.n == len(rr.buf) {
			// Keep the tail that the last-chunk test looks at.
			rr.n = copy(rr.buf, rr.buf[rr.n-len(lastChunk):rr.n])
		}
		before := rr.n
		if rr.fill() != nil {
			return
		}
		got += int64(rr.n - before)
	}
}

// headEnd returns the length of the response head in b, blank line
// included, or -1 if b holds no complete head. Lines may end in LF alone.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// parseHead parses a response head: the status line and the header lines,
// up to and including the blank line. It checks the status line strictly,
// since the status is the verdict, and reads only the headers that delimit
// the body.
func parseHead(b []byte) (respHead, error) {
	line, rest := cutLine(b)
	status, err := parseStatusLine(line)
	if err != nil {
		return respHead{}, err
	}
	h := respHead{status: status, contentLength: -1}
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding of a header we ignore
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return respHead{}, fmt.Errorf("%w: header line %q", ErrMalformedResponse, clip(line))
		}
		value = bytes.Trim(value, " \t")
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, ok := parseContentLength(value)
			if !ok || h.contentLength >= 0 && h.contentLength != n {
				return respHead{}, fmt.Errorf("%w: Content-Length %q", ErrMalformedResponse, clip(value))
			}
			h.contentLength = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			// chunked is the last coding when present (RFC 9112, 6.1).
			last := value
			if i := bytes.LastIndexByte(value, ','); i >= 0 {
				last = bytes.Trim(value[i+1:], " \t")
			}
			h.chunked = asciiEqualFold(last, "chunked")
		}
	}
	return h, nil
}

// parseStatusLine parses "HTTP/1.x SSS[ reason]" and returns SSS, a
// three-digit code from 100 to 999 (RFC 9110, 15: a client must accept
// codes it does not know).
func parseStatusLine(line []byte) (int, error) {
	if len(line) < len("HTTP/1.1 200") || string(line[:7]) != "HTTP/1." || !isDigit(line[7]) ||
		line[8] != ' ' || line[9] < '1' || line[9] > '9' || !isDigit(line[10]) || !isDigit(line[11]) ||
		len(line) > 12 && line[12] != ' ' {
		return 0, fmt.Errorf("%w: status line %q", ErrMalformedResponse, clip(line))
	}
	return int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0'), nil
}

// parseContentLength accepts only digits, at most 18 of them, so the value
// cannot overflow.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// cutLine splits b after its first LF and drops the line's CR LF or LF.
func cutLine(b []byte) (line, rest []byte) {
	line, rest, _ = bytes.Cut(b, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), rest
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if ascii.Lower(b[i]) != ascii.Lower(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// clip shortens what a malformed response puts into an error, which ends
// up in logs.
func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
