package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDirectUDP: datagrams sent side by side through directUDP all
// arrive, whole, from the listener's own address, on IPv4, IPv6 and
// dual-stack sockets; a send after Close fails with net.ErrClosed.
func TestDirectUDP(t *testing.T) {
	for _, tc := range []struct{ listen, peer, to string }{
		{"udp4", "127.0.0.1:0", "127.0.0.1"},
		{"udp6", "[::1]:0", "::1"},
		{"udp", "[::]:0", "127.0.0.1"}, // dual stack: IPv4 as ::ffff:127.0.0.1
	} {
		t.Run(tc.listen+"/"+tc.to, func(t *testing.T) {
			addr := "127.0.0.1:0"
			switch tc.listen {
			case "udp6":
				addr = "[::1]:0"
			case "udp":
				addr = ":0"
			}
			c, err := net.ListenPacket(tc.listen, addr)
			if err != nil {
				t.Skipf("no %s socket here: %v", tc.listen, err)
			}
			d, ok := newDirectUDP(c.(*net.UDPConn)).(*directUDP)
			if !ok {
				c.Close()
				t.Fatal("newDirectUDP did not wrap the socket")
			}
			defer d.Close()
			peerNet := "udp4"
			if tc.to == "::1" {
				peerNet = "udp6"
			}
			peer, err := net.ListenPacket(peerNet, tc.peer)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			_ = peer.(*net.UDPConn).SetReadBuffer(4 << 20)
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.to), uint16(peer.LocalAddr().(*net.UDPAddr).Port))

			const senders, each = 8, 50
			var wg sync.WaitGroup
			for g := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						msg := fmt.Appendf(nil, "datagram %d-%d", g, i)
						if n, err := d.WriteToUDPAddrPort(msg, to); err != nil || n != len(msg) {
							t.Errorf("send: %d, %v", n, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			seen := map[string]bool{}
			buf := make([]byte, 2048)
			myPort := d.LocalAddr().(*net.UDPAddr).Port
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(seen) < senders*each {
				n, from, err := peer.ReadFrom(buf)
				if err != nil {
					t.Fatalf("after %d of %d datagrams: %v", len(seen), senders*each, err)
				}
				if p := from.(*net.UDPAddr).Port; p != myPort {
					t.Fatalf("datagram from port %d, want the listener's %d", p, myPort)
				}
				seen[string(buf[:n])] = true
			}

			// sipgo's writes take WriteTo.
			if _, err := d.WriteTo([]byte("via WriteTo"), net.UDPAddrFromAddrPort(to)); err != nil {
				t.Fatal(err)
			}
			if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "via WriteTo" {
				t.Fatalf("WriteTo: %q, %v", buf[:n], err)
			}

			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := d.WriteToUDPAddrPort([]byte("late"), to); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("send after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestDirectUDPSendto: what goes the runtime's way (not sent) and what
// not, and no allocation per datagram.
func TestDirectUDPSendto(t *testing.T) {
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := newDirectUDP(c.(*net.UDPConn)).(*directUDP)
	defer d.Close()
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	for _, tc := range []struct {
		family int
		to     string
		sent   bool
	}{
		{syscall.AF_INET, to.String(), true},
		{syscall.AF_INET, "[::ffff:127.0.0.1]:" + strconv.Itoa(int(to.Port())), true},
		{syscall.AF_INET, "[::1]:5060", false},
		{syscall.AF_INET6, "[fe80::1%lo]:5060", false},
	} {
		sent, errno := sendto(d.fd, tc.family, []byte("x"), netip.MustParseAddrPort(tc.to))
		if sent != tc.sent || (sent && errno != 0) {
			t.Errorf("family %d to %s: sent %v (%v), want %v", tc.family, tc.to, sent, errno, tc.sent)
		}
	}
	msg := []byte("a retransmission")
	if n := testing.AllocsPerRun(100, func() { _, _ = d.WriteToUDPAddrPort(msg, to) }); n != 0 {
		t.Errorf("%v allocations per datagram, want 0", n)
	}
}
