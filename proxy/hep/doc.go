// Package hep exports the SIP messages a proxy.Tap captures to a HEPv3
// (EEP) capture server such as Homer's heplify-server, and encodes HEPv3
// packets.
//
// A packet is "HEP3", its total length (16 bits), then chunks, each a
// vendor id (0x0000, generic), a type, a length (header included) and the
// value, all big-endian: IP family (1), IP protocol (2), IPv4 or IPv6
// source and destination (3/4 or 5/6), source and destination ports
// (7/8), time in seconds and microseconds (9/10), protocol type (11, 1 =
// SIP), capture agent id (12), authentication key (14, when set), the SIP
// message (15), the correlation id (17, the Call-ID) and the capture node
// name (19). TLS and WebSocket messages travel as IP protocol 6 (TCP),
// decrypted.
//
// The Exporter is a proxy.PacketSink: the tap hands it each message on
// its own goroutine; it encodes, queues (bounded, dropping when full) and
// sends from a goroutine of its own, so a capture server that is slow or
// down never delays SIP.
package hep
