package hep

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"time"
)

// HEPv3 (EEP) chunk types of the generic vendor (0x0000).
const (
	ChunkIPFamily      = 0x0001 // uint8: 2 IPv4, 10 IPv6
	ChunkIPProtocol    = 0x0002 // uint8: 6 TCP, 17 UDP
	ChunkIPv4Src       = 0x0003 // 4 bytes
	ChunkIPv4Dst       = 0x0004 // 4 bytes
	ChunkIPv6Src       = 0x0005 // 16 bytes
	ChunkIPv6Dst       = 0x0006 // 16 bytes
	ChunkSrcPort       = 0x0007 // uint16
	ChunkDstPort       = 0x0008 // uint16
	ChunkTimeSec       = 0x0009 // uint32, Unix seconds
	ChunkTimeUsec      = 0x000a // uint32, microseconds within the second
	ChunkProtoType     = 0x000b // uint8: 1 SIP
	ChunkCaptureID     = 0x000c // uint32, capture agent id
	ChunkAuthKey       = 0x000e // octets
	ChunkPayload       = 0x000f // octets, the captured message
	ChunkCorrelationID = 0x0011 // octets (the Call-ID)
	ChunkNodeName      = 0x0013 // octets, capture node name
)

// Values of the family, protocol and type chunks.
const (
	FamilyIPv4 = 2  // AF_INET
	FamilyIPv6 = 10 // AF_INET6
	ProtoUDP   = 17
	ProtoTCP   = 6 // TCP, TLS and WebSocket connections alike
	TypeSIP    = 1
)

// headerLen is "HEP3" and the 16-bit total length; chunkHeaderLen a
// chunk's vendor, type and length.
const (
	headerLen      = 6
	chunkHeaderLen = 6
)

// MaxPacket is the largest HEPv3 packet (its length field has 16 bits).
const MaxPacket = 0xffff

// ErrTooLarge: the message does not fit one HEPv3 packet.
var ErrTooLarge = errors.New("hep: message too large for one HEP packet")

// Message is what one HEP packet carries.
type Message struct {
	// Time is when the message crossed the wire.
	Time time.Time
	// Src and Dst are the sender's and the receiver's addresses.
	Src, Dst netip.AddrPort
	// Transport is UDP, TCP, TLS, WS or WSS.
	Transport string
	// CorrelationID is the Call-ID; empty leaves the chunk out.
	CorrelationID string
	// Payload is the SIP message.
	Payload []byte
}

// Agent identifies the capture agent in every packet.
type Agent struct {
	// CaptureID is the capture agent id.
	CaptureID uint32
	// NodeName is the capture node name; empty leaves the chunk out.
	NodeName string
	// Password is the authentication key; empty leaves the chunk out.
	Password string
}

// Append appends the HEPv3 packet of m to dst. Addresses of different
// families are sent as IPv6 (an IPv4 one mapped).
func Append(dst []byte, m *Message, a *Agent) ([]byte, error) {
	src, dstIP := m.Src.Addr().Unmap(), m.Dst.Addr().Unmap()
	if !src.IsValid() {
		src = netip.IPv4Unspecified()
	}
	if !dstIP.IsValid() {
		dstIP = netip.IPv4Unspecified()
	}
	v6 := src.Is6() || dstIP.Is6()
	size := headerLen + 3*(chunkHeaderLen+1) + 2*(chunkHeaderLen+2) + 3*(chunkHeaderLen+4) +
		chunkHeaderLen + len(m.Payload)
	if v6 {
		size += 2 * (chunkHeaderLen + 16)
	} else {
		size += 2 * (chunkHeaderLen + 4)
	}
	if a.Password != "" {
		size += chunkHeaderLen + len(a.Password)
	}
	if m.CorrelationID != "" {
		size += chunkHeaderLen + len(m.CorrelationID)
	}
	if a.NodeName != "" {
		size += chunkHeaderLen + len(a.NodeName)
	}
	if size > MaxPacket {
		return dst, ErrTooLarge
	}

	start := len(dst)
	dst = append(dst, 'H', 'E', 'P', '3')
	dst = binary.BigEndian.AppendUint16(dst, uint16(size))
	proto := byte(ProtoTCP)
	if strings.EqualFold(m.Transport, "UDP") {
		proto = ProtoUDP
	}
	if v6 {
		dst = appendUint8(dst, ChunkIPFamily, FamilyIPv6)
		dst = appendUint8(dst, ChunkIPProtocol, proto)
		s16, d16 := src.As16(), dstIP.As16()
		dst = appendBytes(dst, ChunkIPv6Src, s16[:])
		dst = appendBytes(dst, ChunkIPv6Dst, d16[:])
	} else {
		dst = appendUint8(dst, ChunkIPFamily, FamilyIPv4)
		dst = appendUint8(dst, ChunkIPProtocol, proto)
		s4, d4 := src.As4(), dstIP.As4()
		dst = appendBytes(dst, ChunkIPv4Src, s4[:])
		dst = appendBytes(dst, ChunkIPv4Dst, d4[:])
	}
	dst = appendUint16(dst, ChunkSrcPort, m.Src.Port())
	dst = appendUint16(dst, ChunkDstPort, m.Dst.Port())
	dst = appendUint32(dst, ChunkTimeSec, uint32(m.Time.Unix()))
	dst = appendUint32(dst, ChunkTimeUsec, uint32(m.Time.Nanosecond()/1000))
	dst = appendUint8(dst, ChunkProtoType, TypeSIP)
	dst = appendUint32(dst, ChunkCaptureID, a.CaptureID)
	if a.Password != "" {
		dst = appendBytes(dst, ChunkAuthKey, []byte(a.Password))
	}
	if m.CorrelationID != "" {
		dst = appendBytes(dst, ChunkCorrelationID, []byte(m.CorrelationID))
	}
	if a.NodeName != "" {
		dst = appendBytes(dst, ChunkNodeName, []byte(a.NodeName))
	}
	dst = appendBytes(dst, ChunkPayload, m.Payload)
	if len(dst)-start != size {
		panic("hep: packet size miscounted")
	}
	return dst, nil
}

// appendChunkHeader appends a generic chunk's header for n bytes of data.
func appendChunkHeader(dst []byte, typ uint16, n int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, 0x0000)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	return binary.BigEndian.AppendUint16(dst, uint16(chunkHeaderLen+n))
}

func appendUint8(dst []byte, typ uint16, v byte) []byte {
	return append(appendChunkHeader(dst, typ, 1), v)
}

func appendUint16(dst []byte, typ uint16, v uint16) []byte {
	return binary.BigEndian.AppendUint16(appendChunkHeader(dst, typ, 2), v)
}

func appendUint32(dst []byte, typ uint16, v uint32) []byte {
	return binary.BigEndian.AppendUint32(appendChunkHeader(dst, typ, 4), v)
}

func appendBytes(dst []byte, typ uint16, v []byte) []byte {
	return append(appendChunkHeader(dst, typ, len(v)), v...)
}
