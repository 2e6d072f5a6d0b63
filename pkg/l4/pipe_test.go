package l4

import (
	"io"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPipeCapacityKnown: the pool learns each pipe's real capacity, so
// copy reads never exceed what a pipe can park.
func TestPipeCapacityKnown(t *testing.T) {
	pp := newPipePool(4096, 4, false)
	p, err := pp.get()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	got, err := unix.FcntlInt(uintptr(p.r), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.cap != got || pp.floor > got {
		t.Fatalf("pool believes the pipe holds %d bytes and reads up to %d, the pipe holds %d", p.cap, pp.floor, got)
	}
}

// TestSmallPipesBackpressure pushes a transfer through pipes far smaller
// than the copy buffer to a reader that is slower than the writer: every
// byte must arrive.
func TestSmallPipesBackpressure(t *testing.T) {
	const size = 8 << 20
	got := make(chan [32]byte, 1)
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 1000)
		var all []byte
		for {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		sum, _, _ := digest(bytesReader(all))
		got <- sum
	})
	e := testEngine(t, Options{PipeSize: 4096, CopyBuffer: 4096})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	io.Copy(c, newStream(9, size))
	c.CloseWrite()
	if sum := <-got; sum != want(9, size) {
		t.Fatal("bytes lost or changed through small pipes")
	}
}
