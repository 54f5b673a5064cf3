// Package heptest is a HEPv3 capture server for tests: it decodes what it
// receives over UDP or TCP with a decoder written from the HEPv3
// specification, independently of package hep's encoder.
package heptest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Chunk is one chunk as it was found.
type Chunk struct {
	Vendor, Type uint16
	Value        []byte
}

// Packet is a decoded HEPv3 packet.
type Packet struct {
	Family, Proto, ProtoType uint8
	Src, Dst                 netip.AddrPort
	Time                     time.Time
	CaptureID                uint32
	AuthKey, NodeName        string
	CorrelationID            string
	Payload                  []byte
	Chunks                   []Chunk
	// Transport is how the packet reached the receiver: "udp" or "tcp".
	Transport string
}

// Decode reads one packet from the start of b; it returns the packet and
// its length.
func Decode(b []byte) (*Packet, int, error) {
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		return nil, 0, errors.New("heptest: no HEP3 header")
	}
	total := int(binary.BigEndian.Uint16(b[4:6]))
	if total < 6 || total > len(b) {
		return nil, 0, fmt.Errorf("heptest: total length %d, have %d bytes", total, len(b))
	}
	p := &Packet{}
	var srcIP, dstIP netip.Addr
	var srcPort, dstPort uint16
	var sec, usec uint32
	seen := map[uint16]bool{}
	for off := 6; off < total; {
		if total-off < 6 {
			return nil, 0, fmt.Errorf("heptest: %d stray bytes at %d", total-off, off)
		}
		vendor := binary.BigEndian.Uint16(b[off:])
		typ := binary.BigEndian.Uint16(b[off+2:])
		n := int(binary.BigEndian.Uint16(b[off+4:]))
		if n < 6 || off+n > total {
			return nil, 0, fmt.Errorf("heptest: chunk %d at %d has length %d", typ, off, n)
		}
		v := b[off+6 : off+n]
		off += n
		p.Chunks = append(p.Chunks, Chunk{Vendor: vendor, Type: typ, Value: append([]byte(nil), v...)})
		if vendor != 0 {
			continue
		}
		if seen[typ] {
			return nil, 0, fmt.Errorf("heptest: chunk %d twice", typ)
		}
		seen[typ] = true
		want := map[uint16]int{1: 1, 2: 1, 3: 4, 4: 4, 5: 16, 6: 16, 7: 2, 8: 2, 9: 4, 10: 4, 11: 1, 12: 4}
		if w, ok := want[typ]; ok && len(v) != w {
			return nil, 0, fmt.Errorf("heptest: chunk %d holds %d bytes, want %d", typ, len(v), w)
		}
		switch typ {
		case 1:
			p.Family = v[0]
		case 2:
			p.Proto = v[0]
		case 3, 5:
			srcIP, _ = netip.AddrFromSlice(v)
		case 4, 6:
			dstIP, _ = netip.AddrFromSlice(v)
		case 7:
			srcPort = binary.BigEndian.Uint16(v)
		case 8:
			dstPort = binary.BigEndian.Uint16(v)
		case 9:
			sec = binary.BigEndian.Uint32(v)
		case 10:
			usec = binary.BigEndian.Uint32(v)
		case 11:
			p.ProtoType = v[0]
		case 12:
			p.CaptureID = binary.BigEndian.Uint32(v)
		case 14:
			p.AuthKey = string(v)
		case 15:
			p.Payload = append([]byte(nil), v...)
		case 17:
			p.CorrelationID = string(v)
		case 19:
			p.NodeName = string(v)
		}
	}
	if (p.Family == 2) != (seen[3] && seen[4]) || (p.Family == 10) != (seen[5] && seen[6]) {
		return nil, 0, fmt.Errorf("heptest: family %d with address chunks %v", p.Family, seen)
	}
	p.Src = netip.AddrPortFrom(srcIP.Unmap(), srcPort)
	p.Dst = netip.AddrPortFrom(dstIP.Unmap(), dstPort)
	p.Time = time.Unix(int64(sec), int64(usec)*1000)
	return p, total, nil
}

// Receiver is a capture server on 127.0.0.1.
type Receiver struct {
	t       testing.TB
	network string
	addr    string
	mu      sync.Mutex
	pkts    []Packet
	errs    []error
	close   func()

	conns    []net.Conn // TCP
	accepted int
}

// Disconnect closes the TCP connections accepted so far; the receiver
// goes on listening.
func (r *Receiver) Disconnect() {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Accepted is how many TCP connections the receiver accepted.
func (r *Receiver) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// ListenUDP starts a UDP capture server.
func ListenUDP(t testing.TB) *Receiver {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{t: t, network: "udp", addr: c.LocalAddr().String(), close: func() { _ = c.Close() }}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			p, used, err := Decode(buf[:n])
			if err == nil && used != n {
				err = fmt.Errorf("heptest: datagram of %d bytes holds a packet of %d", n, used)
			}
			r.add(p, "udp", err)
		}
	}()
	t.Cleanup(r.Close)
	return r
}

// ListenTCP starts a TCP capture server.
func ListenTCP(t testing.TB) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{t: t, network: "tcp", addr: l.Addr().String()}
	r.close = func() {
		_ = l.Close()
		r.Disconnect()
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.accepted++
			r.mu.Unlock()
			go r.readStream(c)
		}
	}()
	t.Cleanup(r.Close)
	return r
}

func (r *Receiver) readStream(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		head, err := br.Peek(6)
		if err != nil {
			return
		}
		if string(head[:4]) != "HEP3" {
			r.add(nil, "tcp", errors.New("heptest: stream out of step"))
			return
		}
		n := int(binary.BigEndian.Uint16(head[4:6]))
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		p, _, err := Decode(buf)
		r.add(p, "tcp", err)
	}
}

func (r *Receiver) add(p *Packet, transport string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	p.Transport = transport
	r.pkts = append(r.pkts, *p)
}

// Address is the receiver as hep.address takes it ("udp://127.0.0.1:port").
func (r *Receiver) Address() string { return r.network + "://" + r.addr }

// Addr is the bound "127.0.0.1:port".
func (r *Receiver) Addr() string { return r.addr }

// Close stops the receiver.
func (r *Receiver) Close() { r.close() }

// Packets returns what was received so far; a packet that did not decode
// fails the test.
func (r *Receiver) Packets() []Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, err := range r.errs {
		r.t.Errorf("heptest: %v", err)
	}
	r.errs = nil
	return append([]Packet(nil), r.pkts...)
}

// Wait polls until done holds for the packets received or d passes, and
// returns them.
func (r *Receiver) Wait(d time.Duration, done func([]Packet) bool) ([]Packet, bool) {
	deadline := time.Now().Add(d)
	for {
		pkts := r.Packets()
		if done(pkts) {
			return pkts, true
		}
		if time.Now().After(deadline) {
			return pkts, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
