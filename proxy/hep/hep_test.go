package hep

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sipwake/sipwake/proxy/hep/heptest"
)

// chunk writes a generic chunk as the HEPv3 specification lays it out:
// vendor 0x0000, type, length including the 6 header bytes, value.
func chunk(typ uint16, v ...byte) []byte {
	b := []byte{0x00, 0x00, byte(typ >> 8), byte(typ)}
	b = binary.BigEndian.AppendUint16(b, uint16(6+len(v)))
	return append(b, v...)
}

// TestAppendLayout checks the bytes of an IPv4 UDP packet against the
// specification's layout, chunk by chunk.
func TestAppendLayout(t *testing.T) {
	payload := []byte("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: abc\r\n\r\n")
	m := &Message{
		Time: time.Unix(1700000000, 123456789), Transport: "UDP", CorrelationID: "abc", Payload: payload,
		Src: netip.MustParseAddrPort("192.0.2.1:5060"), Dst: netip.MustParseAddrPort("198.51.100.2:5080"),
	}
	got, err := Append([]byte("prefix"), m, &Agent{CaptureID: 2001, NodeName: "n1", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for _, c := range [][]byte{
		chunk(1, 2),                       // IP family: AF_INET
		chunk(2, 17),                      // IP protocol: UDP
		chunk(3, 192, 0, 2, 1),            // IPv4 source
		chunk(4, 198, 51, 100, 2),         // IPv4 destination
		chunk(7, 0x13, 0xc4),              // source port 5060
		chunk(8, 0x13, 0xd8),              // destination port 5080
		chunk(9, 0x65, 0x53, 0xf1, 0x00),  // 1700000000 s
		chunk(10, 0x00, 0x01, 0xe2, 0x40), // 123456 µs
		chunk(11, 1),                      // protocol type: SIP
		chunk(12, 0x00, 0x00, 0x07, 0xd1), // capture id 2001
		chunk(14, 'p', 'w'),               // auth key
		chunk(17, 'a', 'b', 'c'),          // correlation id
		chunk(19, 'n', '1'),               // node name
		chunk(15, payload...),             // payload
	} {
		body = append(body, c...)
	}
	want := append([]byte("prefixHEP3"), byte((6+len(body))>>8), byte(6+len(body)))
	want = append(want, body...)
	if !bytes.Equal(got, want) {
		t.Errorf("packet\n% x\nwant\n% x", got, want)
	}
}

func TestAppendDecodes(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxPacket)
	for _, c := range []struct {
		name           string
		src, dst       string
		transport      string
		family, proto  uint8
		agent          Agent
		correlation    string
		wantSrc, wantD string
	}{
		{"ipv4 tcp", "10.0.0.1:5060", "10.0.0.2:40000", "TCP", 2, 6, Agent{CaptureID: 1}, "cid", "10.0.0.1:5060", "10.0.0.2:40000"},
		{"ipv6 tls", "[2001:db8::1]:5061", "[2001:db8::2]:50000", "TLS", 10, 6, Agent{CaptureID: 0xffffffff, NodeName: "edge-1"}, "", "[2001:db8::1]:5061", "[2001:db8::2]:50000"},
		{"mixed families", "192.0.2.1:5060", "[2001:db8::2]:5060", "udp", 10, 17, Agent{Password: "secret"}, "x@y", "[::ffff:192.0.2.1]:5060", "[2001:db8::2]:5060"},
		{"mapped addresses", "[::ffff:192.0.2.1]:5060", "[::ffff:192.0.2.2]:5060", "UDP", 2, 17, Agent{}, "", "192.0.2.1:5060", "192.0.2.2:5060"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &Message{Time: time.Unix(1700000001, 999999000), Transport: c.transport, CorrelationID: c.correlation,
				Src: netip.MustParseAddrPort(c.src), Dst: netip.MustParseAddrPort(c.dst), Payload: []byte("SIP/2.0 200 OK\r\n\r\n")}
			b, err := Append(nil, m, &c.agent)
			if err != nil {
				t.Fatal(err)
			}
			p, n, err := heptest.Decode(b)
			if err != nil || n != len(b) {
				t.Fatalf("decode: %v (%d of %d bytes)", err, n, len(b))
			}
			wantSrc, wantDst := netip.MustParseAddrPort(c.wantSrc), netip.MustParseAddrPort(c.wantD)
			if p.Family != c.family || p.Proto != c.proto || p.ProtoType != 1 || p.CaptureID != c.agent.CaptureID ||
				p.Src.Addr().Unmap() != wantSrc.Addr().Unmap() || p.Src.Port() != wantSrc.Port() || p.Dst.Port() != wantDst.Port() ||
				p.NodeName != c.agent.NodeName || p.AuthKey != c.agent.Password || p.CorrelationID != c.correlation ||
				!p.Time.Equal(m.Time) || string(p.Payload) != string(m.Payload) {
				t.Errorf("decoded %+v", p)
			}
			for _, ch := range p.Chunks {
				if (ch.Type == 14 && c.agent.Password == "") || (ch.Type == 17 && c.correlation == "") || (ch.Type == 19 && c.agent.NodeName == "") {
					t.Errorf("chunk %d present though empty", ch.Type)
				}
			}
		})
	}
	if _, err := Append(nil, &Message{Payload: big}, &Agent{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized payload: %v", err)
	}
	// The largest payload that fits gives a packet of exactly MaxPacket bytes.
	m := &Message{Src: netip.MustParseAddrPort("192.0.2.1:1"), Dst: netip.MustParseAddrPort("192.0.2.2:2")}
	small, _ := Append(nil, m, &Agent{})
	m.Payload = big[:MaxPacket-len(small)]
	if b, err := Append(nil, m, &Agent{}); err != nil || len(b) != MaxPacket {
		t.Errorf("largest packet: %d bytes, %v", len(b), err)
	}
}

func TestParseAddress(t *testing.T) {
	for _, c := range []struct {
		in, network, addr string
		ok                bool
	}{
		{"udp://127.0.0.1:9060", "udp", "127.0.0.1:9060", true},
		{"tcp://homer.example.com:9061", "tcp", "homer.example.com:9061", true},
		{"tcp://[2001:db8::1]:9060", "tcp", "[2001:db8::1]:9060", true},
		{"sctp://127.0.0.1:9060", "", "", false},
		{"udp://127.0.0.1", "", "", false},
		{"udp://:9060", "", "", false},
		{"udp://127.0.0.1:0", "", "", false},
		{"udp://127.0.0.1:9060/x", "", "", false},
		{"127.0.0.1:9060", "", "", false},
		{"", "", "", false},
	} {
		n, a, err := ParseAddress(c.in)
		if (err == nil) != c.ok || n != c.network || a != c.addr {
			t.Errorf("ParseAddress(%q) = %q %q %v", c.in, n, a, err)
		}
	}
}
